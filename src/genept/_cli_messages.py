"""``genept embed-cells`` errors in the command's words.

:func:`gpt.tl.embed_cells <genept.tl.embed_cells>` raises messages written for Python
(``pass mask_var=False``, ``run gpt.tl.embed_genes(adata) first``). The command line
rewrites them with :func:`as_flags`: argument names become flags, values are written as
the command takes them (shell-quoted), and the Python steps that have a command become
that command, with the paths and settings of the invocation.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex

#: embed_cells arguments that embed-cells takes as flags: their names in an error
#: message are given as the flags (``mask_var=False`` is ``--all-genes``)
FLAG_ARGS = (
    "method", "layer", "use_raw", "mask_var", "whiten", "gene_key", "normalize", "model",
    "n_genes", "prefix", "gene_symbols", "hash_names", "shuffle", "windows", "window_decay",
)  # fmt: skip
#: the flags among them that take no value
SWITCHES = ("use-raw", "hash-names", "shuffle")

_STR = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""  # a Python string literal (repr)


def _shell(literal: str) -> str:
    """A Python string literal (as ``repr`` writes it) quoted for a POSIX shell."""
    return shlex.quote(ast.literal_eval(literal))


def embed_genes_command(path: str, key: str) -> str:
    """The ``genept embed-genes`` line that writes gene vectors to ``varm[key]`` of ``path``."""
    path = shlex.quote(path)
    return f"`genept embed-genes {path} {path} --key-added {shlex.quote(key)}`"


def as_flags(
    message: str,
    *,
    input: str = "INPUT.h5ad",  # the command's own name for it
    reference: str = "REFERENCE.h5ad",
    ref_flags: str = "",
    gene_key: str = "X_genept",
) -> str:
    """An ``embed_cells`` error message written for ``genept embed-cells``.

    ``--n-genes all`` for ``None``; a switch as ``--shuffle`` / ``no --shuffle``, or
    ``on`` / ``off`` where a setting is compared with the reference's; string values
    quoted for the shell only where they need it. ``gpt.tl.embed_cells(reference, ...)``
    becomes the ``genept embed-cells`` line that embeds the ``reference`` file (with
    ``ref_flags``: the settings the query needs it to have), ``gpt.tl.embed_genes`` the
    ``genept embed-genes`` line of ``input`` (``gene_key``) or of the reference. Paths
    are inserted after every other rewrite, so a path is never mistaken for an argument.

    Examples
    --------
    >>> as_flags("pass mask_var=False for all genes")
    'pass --all-genes for all genes'
    >>> as_flags("but n_genes=10 (reference: None), whiten=0.0 (reference: 0.1)")
    'but --n-genes 10 (reference: all), --whiten 0.0 (reference: 0.1)'
    >>> as_flags("hash_names=False (reference: True); or pass use_raw=True")
    '--hash-names off (reference: on); or pass --use-raw'
    """
    ref = shlex.quote(reference)
    commands: list[str] = []

    def command(text: str) -> str:  # a placeholder: no later rewrite touches it
        commands.append(text)
        return f"\0{len(commands) - 1}\0"

    message = re.sub(
        rf"run gpt\.tl\.embed_cells\(reference, method='(\w)', key_added={_STR}\) first",
        lambda m: (
            "run "
            + command(
                f"`genept embed-cells {ref} {ref} --method {m[1]} --key-added {_shell(m[2])}"
                f"{ref_flags}`"
            )
            + " first"
        ),
        message,
    )
    message = re.sub(
        rf"\b(re-run|run|Run) gpt\.tl\.embed_genes\(reference, key_added={_STR}\)",
        lambda m: f"{m[1]} " + command(embed_genes_command(reference, ast.literal_eval(m[2]))),
        message,
    )
    message = re.sub(
        r"\b(re-run|run|Run) gpt\.tl\.embed_genes\(adata\)",
        lambda m: (
            f"{m[1]} " + command(embed_genes_command(input, gene_key)) + " (or add --embed-genes)"
        ),
        message,
    )
    message = message.replace(
        "run sc.pp.highly_variable_genes(adata)",
        "add that column first (sc.pp.highly_variable_genes writes highly_variable)",
    )
    message = message.replace("mask_var=False", "--all-genes")
    names = "|".join(FLAG_ARGS)
    flag = lambda m: "--" + m[1].replace("_", "-")  # noqa: E731
    message = re.sub(rf"\b({names})=(?=[;,)\s]|$)", flag, message)  # "pass gene_key=;"
    message = re.sub(rf"\b({names})=", lambda m: flag(m) + " ", message)
    # values as the command takes them
    on = {"True": "on", "False": "off"}
    switches = "|".join(SWITCHES)
    message = re.sub(
        rf"--({switches}) (True|False) \(reference: (True|False)\)",
        lambda m: f"--{m[1]} {on[m[2]]} (reference: {on[m[3]]})",
        message,
    )
    message = re.sub(
        rf"--({switches}) (True|False)\b",
        lambda m: f"--{m[1]}" if m[2] == "True" else f"no --{m[1]}",
        message,
    )
    flags = names.replace("_", "-")
    message = re.sub(rf"(--(?:{flags})) {_STR}", lambda m: f"{m[1]} {_shell(m[2])}", message)
    message = re.sub(rf"\(reference: {_STR}\)", lambda m: f"(reference: {_shell(m[1])})", message)
    message = re.sub(r"--n-genes None\b", "--n-genes all", message)
    message = re.sub(r"(--n-genes \S+ \(reference: )None\)", r"\1all)", message)
    return re.sub("\0(\\d+)\0", lambda m: commands[int(m[1])], message)


def given_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, skip=()) -> str:
    """The options of ``parser`` that ``args`` sets to other values than the defaults.

    Written as a command line (``" --whiten 0.0 --model x"``, a switch as its flag alone,
    values shell-quoted, ``None`` as ``all``: ``--n-genes``' value for every gene), in the
    parser's order; ``skip``: destinations left out.
    """
    out = []
    for action in parser._actions:  # argparse has no public list
        if not action.option_strings or action.dest in ("help", *skip):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # a switch
            out.append(flag)
        else:
            out.append(f"{flag} {shlex.quote('all' if value is None else str(value))}")
    return "".join(" " + f for f in out)
