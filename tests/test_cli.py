"""The ``genept`` command: every documented command runs as written (issue 14 #18).

Commands are read from README.md and docs/getting-started.md (code blocks and inline
code), so a changed document is tested as it reads. They run in-process through
:func:`genept.cli.main` on small files named as in the documents.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from genept.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "getting-started.md"]


def documented_commands(path: Path) -> list[str]:
    """``genept ...`` commands of a Markdown file: shell blocks (with ``\\`` continuations,
    without comments and ``&&`` chains) and inline code."""
    text = path.read_text()
    cmds = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                part = part.strip()
                if part.startswith("genept "):
                    cmds.append(" ".join(part.split()))
    text_wo_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
    cmds += [" ".join(c.split()) for c in re.findall(r"`(genept [^`]+)`", text_wo_blocks)]
    return [c for c in cmds if "<" not in c and "--help" not in c]


def _small(n_obs: int, seed: int) -> ad.AnnData:
    """Log-normalised pbmc68k_reduced cells with the representations the documents use."""
    import scanpy as sc

    full = sc.datasets.pbmc68k_reduced()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(full.n_obs, n_obs, replace=False))
    genes = full.raw.var_names[:60]
    X = full.raw[:, genes].X[idx]
    a = ad.AnnData(
        np.asarray(X.todense() if hasattr(X, "todense") else X, dtype=np.float32),
        obs=pd.DataFrame(
            {"cell_type": full.obs["bulk_labels"].to_numpy()[idx]}, index=full.obs_names[idx]
        ),
        var=pd.DataFrame(index=genes),
    )
    a.raw = a.copy()
    a.obsm["X_pca"] = full.obsm["X_pca"][idx, :20]
    # stand-ins for an scGPT checkpoint's and a text model's cell embeddings
    a.obsm["X_scGPT"] = (full.obsm["X_pca"][idx, :16] + rng.normal(0, 0.1, (n_obs, 16))).astype(
        np.float32
    )
    a.obsm["X_genept_s"] = (
        full.obsm["X_pca"][idx, 10:30] + rng.normal(0, 0.1, (n_obs, 20))
    ).astype(np.float32)
    return a


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with in.h5ad, query.h5ad and ref.h5ad, as the documents name them."""
    d = tmp_path_factory.mktemp("cli")
    _small(120, 0).write_h5ad(d / "in.h5ad")
    full = _small(240, 1)
    full[:180].copy().write_h5ad(d / "ref.h5ad")
    full[180:].copy().write_h5ad(d / "query.h5ad")
    return d


def _run(cmd: str, cwd: Path, monkeypatch, cache: Path) -> int:
    monkeypatch.chdir(cwd)
    argv = shlex.split(cmd)[1:]
    if argv[0] == "demo":
        pytest.skip("the demo runs in test_demo_writes_everything_inside_out")
    return main([*argv, "--no-progress", "--cache-dir", str(cache)])


def test_documents_have_commands():
    found = {p.name: documented_commands(p) for p in DOCS}
    assert len(found["README.md"]) >= 3 and len(found["getting-started.md"]) >= 4, found


@pytest.mark.parametrize(
    "cmd",
    [pytest.param(c, id=f"{p.name}:{c[:60]}") for p in DOCS for c in documented_commands(p)],
)
def test_documented_command_runs(cmd, workdir, monkeypatch, tmp_path_factory, capsys):
    """Each command of README.md / getting-started.md exits 0 and writes its output."""
    cache = tmp_path_factory.getbasetemp() / "cli_cache"  # shared: texts encoded once
    rc = _run(cmd, workdir, monkeypatch, cache)
    err = capsys.readouterr().err
    assert rc == 0, err
    argv = shlex.split(cmd)
    out = argv[3] if len(argv) > 3 and not argv[3].startswith("-") else None
    if out:
        b = ad.read_h5ad(workdir / out)
        if argv[1] == "embed-genes":
            assert "X_genept" in b.varm and b.varm["X_genept"].shape[0] == b.n_vars
        elif argv[1] == "embed-cells":
            key = "X_genept_s" if "--method s" in cmd else "X_genept_w"
            assert np.isfinite(b.obsm[key]).all()
        elif argv[1] == "annotate":
            key = next((k for k in b.uns if k.startswith("genept_")), None)
            m = b.uns[key]["metrics"]
            assert 0.0 <= m["accuracy"] <= 1.0 and b.obs[key].notna().any()


def test_annotate_readme_defaults_need_no_scgpt(workdir, monkeypatch, tmp_path):
    """The README's `annotate` call works on files without X_scGPT (was: KeyError X_scGPT)."""
    for name in ("query", "ref"):
        a = ad.read_h5ad(workdir / f"{name}.h5ad")
        del a.obsm["X_scGPT"]
        a.write_h5ad(tmp_path / f"{name}.h5ad")
    rc = _run(
        "genept annotate query.h5ad annotated.h5ad --reference ref.h5ad",
        tmp_path,
        monkeypatch,
        tmp_path / "cache",
    )
    assert rc == 0
    b = ad.read_h5ad(tmp_path / "annotated.h5ad")
    assert list(b.uns["genept_scmpt"]["params"]["reps"]) == ["X_pca", "X_genept_s"]
    # the annotation is better than chance on these well-separated labels
    assert b.uns["genept_scmpt"]["metrics"]["accuracy"] > 1.5 / b.obs["cell_type"].nunique()


def test_use_rep_takes_several_values(workdir, monkeypatch, tmp_path):
    """`--use-rep A B` and `--use-rep A --use-rep B` mean the same (was: error)."""
    for form in ("--use-rep X_pca X_genept_s", "--use-rep X_pca --use-rep X_genept_s"):
        out = tmp_path / "e.h5ad"
        rc = _run(
            f"genept annotate query.h5ad {out} --reference ref.h5ad --method knn-ensemble {form}",
            workdir,
            monkeypatch,
            tmp_path / "cache",
        )
        assert rc == 0
        assert list(ad.read_h5ad(out).uns["genept_knn_ensemble"]["params"]["use_rep"]) == [
            "X_pca",
            "X_genept_s",
        ]


@pytest.mark.slow
def test_demo_writes_everything_inside_out(tmp_path, monkeypatch):
    """`genept demo --out D` writes its figures (the confusion matrix included) into D only
    (issue 14 #17: it went to figures/confusion_matrixgenept_demo/...)."""
    monkeypatch.chdir(tmp_path)
    rc = main(["demo", "--out", "genept_demo", "--no-progress", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    outside = [p for p in tmp_path.rglob("*.png") if "genept_demo" not in p.parts]
    assert outside == []
    for f in ("confusion_scmpt.png", "gene_embedding_umap.png", "umap_genept_w.png"):
        assert (tmp_path / "genept_demo" / f).stat().st_size > 1000
    metrics = pd.read_csv(tmp_path / "genept_demo" / "metrics.tsv", sep="\t")
    acc = metrics.loc[metrics["metric"].str.endswith("accuracy"), "value"]
    assert len(acc) == 4 and ((acc > 0.5) & (acc <= 1.0)).all()  # well above chance (10 types)


def test_help_is_fast_and_imports_nothing_heavy():
    """`genept --help` answers before any heavy import (issue 10: was 7-30 s)."""
    code = (
        "import sys, time; t = time.perf_counter(); from genept.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'openai', 'sklearn', "
        "'scanpy', 'anndata', 'matplotlib') if m in sys.modules]\n"
        "print(heavy, time.perf_counter() - t, file=sys.stderr)"
    )
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    assert "usage: genept" in r.stdout
    heavy, _ = r.stderr.strip().rsplit("]", 1)
    assert heavy == "[", r.stderr
    assert wall < 5.0  # well under 1 s on an idle machine; generous for a loaded CI


def test_embed_cells_reference_reads_the_query_through_the_reference(
    workdir, monkeypatch, tmp_path, capsys
):
    """`embed-cells --reference`: the query gets the reference's gene map (own HVGs differ)."""
    import scanpy as sc

    for name in ("ref", "query"):
        a = ad.read_h5ad(workdir / f"{name}.h5ad")
        sc.pp.highly_variable_genes(a, n_top_genes=20)  # each side on its own
        a.write_h5ad(tmp_path / f"{name}.h5ad")
    cache = tmp_path / "cache"
    # a reference not embedded yet: the error gives the command that embeds it
    q = "genept embed-cells query.h5ad query.h5ad --method w --reference ref.h5ad"
    assert _run(q, tmp_path, monkeypatch, cache) == 2
    err = capsys.readouterr().err
    # (it has no gene vectors either)
    fix = "genept embed-cells ref.h5ad ref.h5ad --method w --key-added X_genept_w --embed-genes"
    assert f"run `{fix}` first" in err and "gpt.tl" not in err
    assert "X_genept_w" not in ad.read_h5ad(tmp_path / "query.h5ad").obsm
    cmds = [
        fix,  # the command as the error gave it
        "genept embed-cells query.h5ad alone.h5ad --method w --embed-genes",
        "genept embed-cells query.h5ad query.h5ad --method w --reference ref.h5ad",
    ]
    for cmd in cmds:
        assert _run(cmd, tmp_path, monkeypatch, cache) == 0
    ref, alone, query = (ad.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("ref", "alone", "query"))
    maps = [x.uns["genept_w"]["params"]["gene_map"] for x in (ref, alone, query)]
    assert maps[0] == maps[2] != maps[1]
    # the same as the Python call on the same objects
    import genept as gpt

    expected = gpt.tl.embed_cells(ad.read_h5ad(tmp_path / "alone.h5ad"), reference=ref, copy=True)
    np.testing.assert_allclose(query.obsm["X_genept_w"], expected.obsm["X_genept_w"], atol=1e-6)
    assert (
        _run(
            "genept embed-cells query.h5ad q2.h5ad --reference nope.h5ad",
            tmp_path,
            monkeypatch,
            cache,
        )
        == 2
    )


def test_embed_cells_s_defaults_are_the_functions(workdir, monkeypatch, tmp_path, capsys):
    """`embed-cells --method s` writes the sentences gpt.tl.embed_cells writes by default."""
    from genept.pp import PAPER_PREFIX

    cache = tmp_path / "cache"
    cmd = "genept embed-cells {} {} --method s --model all-MiniLM-L6-v2"
    assert _run(cmd.format(workdir / "in.h5ad", "s.h5ad"), tmp_path, monkeypatch, cache) == 0
    p = ad.read_h5ad(tmp_path / "s.h5ad").uns["genept_s"]["params"]
    assert p["n_genes"] == 25 and p["prefix"] == PAPER_PREFIX
    paper = cmd + " --n-genes all --prefix ''"
    assert _run(paper.format(workdir / "in.h5ad", "p.h5ad"), tmp_path, monkeypatch, cache) == 0
    p = ad.read_h5ad(tmp_path / "p.h5ad").uns["genept_s"]["params"]
    assert p["n_genes"] == 0 and p["prefix"] == ""
    assert _run(cmd.format("in.h5ad", "x.h5ad") + " --n-genes 0", workdir, monkeypatch, cache) == 2
    assert "--n-genes must be a positive number, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(cmd.format("in.h5ad", "x.h5ad") + " --n-genes many", workdir, monkeypatch, cache)
    assert "expected a positive integer, 'auto' or 'all', got 'many'" in capsys.readouterr().err


def test_embed_cells_gene_options_are_the_functions(workdir, monkeypatch, tmp_path, capsys):
    """`--all-genes/--mask-var/--whiten/--gene-key/--windows/--window-decay` reach
    gpt.tl.embed_cells under the same meaning: the CLI result equals the Python call's."""
    import scanpy as sc

    import genept as gpt

    a = ad.read_h5ad(workdir / "in.h5ad")
    sc.pp.highly_variable_genes(a, n_top_genes=20)
    a.var["first30"] = np.arange(a.n_vars) < 30
    a.write_h5ad(tmp_path / "in.h5ad")
    cache = tmp_path / "cache"
    cmd = "genept embed-cells in.h5ad {} --embed-genes --gene-key X_mine --model all-MiniLM-L6-v2"
    cases = {
        "paper.h5ad": ("--all-genes --whiten 0", dict(mask_var=False, whiten=False)),
        "col.h5ad": ("--mask-var first30 --whiten 1", dict(mask_var="first30", whiten=1.0)),
    }
    b = a.copy()
    gpt.tl.embed_genes(b, key_added="X_mine")
    for out, (flags, kwargs) in cases.items():
        assert _run(f"{cmd.format(out)} {flags}", tmp_path, monkeypatch, cache) == 0
        got = ad.read_h5ad(tmp_path / out)
        assert "X_mine" in got.varm and "X_genept" not in got.varm
        p = got.uns["genept_w"]["params"]
        assert p["gene_key"] == "X_mine" and p["whiten"] == float(kwargs["whiten"])
        assert p["mask_var"] == ("all genes" if kwargs["mask_var"] is False else "first30")
        want = gpt.tl.embed_cells(b, gene_key="X_mine", copy=True, **kwargs).obsm["X_genept_w"]
        np.testing.assert_allclose(got.obsm["X_genept_w"], want, atol=1e-6)
    # the default (no flag): highly_variable, whitening 0.1
    assert _run(cmd.format("default.h5ad"), tmp_path, monkeypatch, cache) == 0
    p = ad.read_h5ad(tmp_path / "default.h5ad").uns["genept_w"]["params"]
    assert p["mask_var"] == "highly_variable" and p["whiten"] == 0.1
    # GenePT-s windows: two windows of every gene that fits, decay 0.25
    s = "genept embed-cells in.h5ad s.h5ad --method s --model all-MiniLM-L6-v2 --all-genes"
    assert _run(s + " --windows 2 --window-decay 0.25", tmp_path, monkeypatch, cache) == 0
    p = ad.read_h5ad(tmp_path / "s.h5ad").uns["genept_s"]["params"]
    assert (p["windows"], p["window_decay"], p["mask_var"]) == (2, 0.25, "all genes")
    capsys.readouterr()
    bad = {
        " --windows 0": "--windows must be a positive number, got 0",
        " --window-decay 2": "--window-decay must be in (0, 1], got 2.0",
        # the function's message, with its arguments written as the command's flags
        " --mask-var nope": "--mask-var nope is not a column of adata.var; add that column "
        "first (sc.pp.highly_variable_genes writes highly_variable) or pass --all-genes",
    }
    for flags, message in bad.items():
        assert _run(s.replace(" --all-genes", "") + flags, tmp_path, monkeypatch, cache) == 2
        assert message in capsys.readouterr().err
    assert _run(cmd.format("x.h5ad") + " --whiten -1", tmp_path, monkeypatch, cache) == 2
    assert (
        "--whiten must be a shrinkage >= 0 (0: no whitening), got -1.0" in capsys.readouterr().err
    )
    ref = "genept embed-cells in.h5ad x.h5ad --reference in.h5ad --all-genes"
    assert _run(ref, tmp_path, monkeypatch, cache) == 2
    assert "--mask-var/--all-genes and --reference exclude each other" in capsys.readouterr().err
    # settings other than the reference's are named as the flags, with the flags' values
    q = "genept embed-cells in.h5ad x.h5ad --method s --model all-MiniLM-L6-v2 --reference s.h5ad"
    assert _run(q, tmp_path, monkeypatch, cache) == 2
    assert "but --n-genes 25 (reference: all), --windows 1 (reference: 2)" in (
        capsys.readouterr().err
    )
    ref = "genept embed-cells in.h5ad x.h5ad --reference default.h5ad --whiten 0 --gene-key X_mine"
    assert _run(ref, tmp_path, monkeypatch, cache) == 2
    assert "settings, but --whiten 0.0 (reference: 0.1);" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one or the other
        _run(cmd.format("x.h5ad") + " --all-genes --mask-var first30", tmp_path, monkeypatch, cache)
    assert not (tmp_path / "x.h5ad").exists()


@pytest.mark.parametrize(
    "message, expected",
    [
        ("pass mask_var=False for all genes", "pass --all-genes for all genes"),
        ("n_genes=10 (reference: None), whiten=0.0", "--n-genes 10 (reference: all), --whiten 0.0"),
        ("n_genes=None (reference: 25)", "--n-genes all (reference: 25)"),
        ("shuffle=False (reference: True)", "--shuffle off (reference: on)"),
        ("or pass use_raw=True; hash_names=False", "or pass --use-raw; no --hash-names"),
        ("(or pass gene_key=; varm keys: [])", "(or pass --gene-key; varm keys: [])"),
        (
            "gene_model='x', prefix_key, normalize_total",
            "gene_model='x', prefix_key, normalize_total",
        ),
        # values quoted for the shell where they need it, and only there
        (
            "pass method='s'; gene_key='a b' (reference: 'X_genept'), model='$HOME'",
            "pass --method s; --gene-key 'a b' (reference: X_genept), --model '$HOME'",
        ),
        # Python steps that have a command are given as the command, with the paths
        (
            "run gpt.tl.embed_cells(reference, method='s', key_added='X_s') first",
            "run `genept embed-cells 'my ref.h5ad' 'my ref.h5ad' --method s --key-added X_s "
            "--whiten 0.0` first",
        ),
        (
            "re-run gpt.tl.embed_genes(adata) or pass another gene_key=",
            "re-run `genept embed-genes q.h5ad q.h5ad --key-added X_g` (or add --embed-genes) "
            "or pass another --gene-key",
        ),
        (
            "Run gpt.tl.embed_genes(reference, key_added='X') and re-embed the reference",
            "Run `genept embed-genes 'my ref.h5ad' 'my ref.h5ad' --key-added X` and re-embed "
            "the reference",
        ),
    ],
)
def test_errors_name_the_flags(message, expected):
    """`embed-cells` errors: the function's argument names become the command's flags."""
    from genept._cli_messages import as_flags

    paths = dict(input="q.h5ad", reference="my ref.h5ad", gene_key="X_g")
    assert as_flags(message, **paths, ref_flags=" --whiten 0.0") == expected


def test_paths_are_not_rewritten_as_arguments():
    """A path holding ``name=value`` (e.g. a Hydra run folder) stays as it is."""
    from genept._cli_messages import as_flags

    ref = "runs/method=w,whiten=0.1/shuffle=True/ref.h5ad"
    got = as_flags(
        "run gpt.tl.embed_cells(reference, method='w', key_added='X_genept_w') first",
        reference=ref,
    )
    assert got == f"run `genept embed-cells {ref} {ref} --method w --key-added X_genept_w` first"


def test_suggested_reference_command_runs_as_given(workdir, monkeypatch, tmp_path, capsys):
    """The line that embeds a reference carries the query's settings: run as the error
    gives it, the query command then succeeds (GenePT-w with other whitening and gene key,
    GenePT-s with other sentence settings)."""
    cache = tmp_path / "cache"
    queries = [
        "genept embed-cells query.h5ad q.h5ad --reference ref.h5ad --whiten 0.5 --gene-key X_k",
        "genept embed-cells query.h5ad q.h5ad --reference ref.h5ad --method s --model "
        "all-MiniLM-L6-v2 --n-genes 10 --windows 2 --prefix ''",
    ]
    for q in queries:
        for name in ("ref", "query"):
            shutil.copy(workdir / f"{name}.h5ad", tmp_path / f"{name}.h5ad")
        assert _run(q, tmp_path, monkeypatch, cache) == 2
        fix = re.search(r"run `(genept embed-cells [^`]+)` first", capsys.readouterr().err)[1]
        assert _run(fix, tmp_path, monkeypatch, cache) == 0, fix
        capsys.readouterr()
        assert _run(q, tmp_path, monkeypatch, cache) == 0, capsys.readouterr().err
