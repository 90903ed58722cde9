"""Nested OpenMP parallelism is off while genept runs torch on CPU (``openmp_unnested``).

numba's OpenMP threading layer (started by scanpy's ``highly_variable_genes``) turns
nesting on in the runtime torch then shares; with MKL's dynamic threading off (after any
``torch.set_num_threads``) every parallel ``sqrt``/``exp`` opens a nested team. The unit
tests drive the context with stand-in runtimes; the end-to-end test reproduces the
state in a fresh interpreter and reads the runtimes' settings through threadpoolctl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from genept._core import _device
from genept._core._device import openmp_unnested, torch_threads


def gnu(*libs):
    """``_openmp_libraries`` stand-in: every lib a GNU runtime."""
    return lambda: [("libgomp", lib) for lib in libs]


def test_nesting_turned_off_inside_and_restored_after(monkeypatch, fake_openmp):
    on = fake_openmp(255, nested=True)  # numba's doing
    off = fake_openmp(2147483647, nested=False)  # torch's own libgomp: nesting off
    no_get_nested = fake_openmp(4)  # a build without the deprecated call
    single = fake_openmp(1)
    monkeypatch.setattr(_device, "_openmp_libraries", gnu(on, off, no_get_nested, single))
    with openmp_unnested() as changed:
        assert changed == 2
        assert (on.levels, on.nested) == (1, False)
        assert no_get_nested.levels == 1
        assert off.calls == [] and single.calls == []  # left alone
    assert (on.levels, on.nested) == (255, True)
    assert no_get_nested.levels == 4
    assert off.levels == 2147483647 and off.calls == []


def test_other_runtimes_are_read_from_the_level_limit(monkeypatch, fake_openmp):
    """Intel / LLVM: nesting is the level limit; their deprecated omp_get_nested is not called."""
    intel, llvm = fake_openmp(8, nested=False), fake_openmp(1, nested=False)
    monkeypatch.setattr(
        _device, "_openmp_libraries", lambda: [("libiomp", intel), ("libomp", llvm)]
    )
    with openmp_unnested() as changed:
        assert changed == 1 and intel.levels == 1 and llvm.calls == []
    assert intel.levels == 8
    assert intel.get_nested_calls == llvm.get_nested_calls == 0


def test_restored_after_an_error(nested_openmp):
    lib = nested_openmp
    with pytest.raises(RuntimeError, match="boom"), openmp_unnested():
        assert lib.levels == 1
        raise RuntimeError("boom")
    assert lib.levels == 255 and lib.nested
    assert _device._unnest["depth"] == 0


def test_nested_blocks_restore_once_at_the_outer_exit(nested_openmp):
    lib = nested_openmp
    with openmp_unnested() as outer:
        with openmp_unnested() as inner:
            assert outer == inner == 1 and lib.levels == 1
        assert lib.levels == 1  # the inner exit leaves the outer block unnested
    assert lib.levels == 255 and lib.calls == [1, 255]


def test_overlapping_blocks_of_two_threads(nested_openmp):
    """A enters, B enters, A leaves: B's block still runs unnested; B's exit restores."""
    import threading

    lib = nested_openmp
    a_in, b_in, a_out, seen = threading.Event(), threading.Event(), threading.Event(), []

    def a():
        with openmp_unnested():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with openmp_unnested():
            b_in.set()
            a_out.wait(5)
            seen.append(lib.levels)

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start(), tb.start()
    ta.join(10), tb.join(10)
    assert seen == [1]
    assert lib.levels == 255 and _device._unnest["depth"] == 0


def test_a_limit_changed_inside_is_kept(nested_openmp):
    lib = nested_openmp
    with openmp_unnested():
        lib.omp_set_max_active_levels(3)  # someone inside chose a limit on purpose
    assert lib.levels == 3


def test_unreadable_runtime_is_skipped(monkeypatch, fake_openmp):
    class Broken:
        def omp_get_max_active_levels(self):
            raise OSError("not a runtime")

    lib = fake_openmp(8, nested=True)
    monkeypatch.setattr(_device, "_openmp_libraries", gnu(Broken(), lib))
    with openmp_unnested() as changed:
        assert changed == 1 and lib.levels == 1
    assert lib.levels == 8


def test_no_runtimes_is_a_no_op(monkeypatch):
    monkeypatch.setattr(_device, "_openmp_libraries", lambda: [])
    with openmp_unnested() as changed:
        assert changed == 0


def test_torch_threads_runs_unnested(nested_openmp):
    lib = nested_openmp
    with torch_threads(1) as n:
        assert n == 1 and lib.levels == 1
    assert lib.levels == 255


def test_minilm_encodes_unnested(minilm, monkeypatch, nested_openmp):
    """The encoder's CPU block is unnested also without settings.n_jobs."""
    import genept as gpt

    lib = nested_openmp
    monkeypatch.setattr(gpt.settings, "n_jobs", None)
    seen = []
    real = minilm.model.encode

    def spy(*a, **k):
        seen.append(lib.levels)
        return real(*a, **k)

    monkeypatch.setattr(minilm.model, "encode", spy)
    minilm.encode(["CD3E CD3D", "MS4A1"], cache=False)
    assert seen == [1]
    assert lib.levels == 255


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux OpenMP builds of torch")
def test_torchs_runtime_is_found():
    """threadpoolctl (3.1's private handle or 3.2+'s public one) finds the runtime torch uses."""
    import torch

    if "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("this torch build does not use OpenMP")
    libs = _device._openmp_libraries()
    assert libs, "no OpenMP runtime found after import torch"
    for prefix, lib in libs:
        assert prefix in {"libgomp", "libiomp", "libomp"}
        assert int(lib.omp_get_max_active_levels()) >= 1


_SCRIPT = textwrap.dedent(
    """
    import json, os
    import numba, numpy as np

    @numba.njit(parallel=True)
    def total(x):
        s = 0.0
        for i in numba.prange(x.shape[0]):
            s += x[i]
        return s

    try:
        total(np.ones(1000))
        layer = numba.threading_layer()
    except Exception as e:  # no OpenMP layer here
        print(json.dumps({"skip": f"numba's omp layer: {e}"}))
        raise SystemExit
    import torch
    from threadpoolctl import ThreadpoolController
    from genept._core._device import _nesting_on, openmp_unnested, torch_threads

    def state():
        libs = ThreadpoolController().select(user_api="openmp").lib_controllers
        return [[c.filepath, *_nesting_on(c.dynlib, c.prefix)] for c in libs]

    torch.set_num_threads(torch.get_num_threads())
    out = {"layer": layer, "before": state()}
    with openmp_unnested() as changed:
        out["changed"] = changed
        out["inside"] = state()
    out["after"] = state()
    with torch_threads(1):
        out["in_torch_threads"] = state()
    out["after_torch_threads"] = state()
    print(json.dumps(out))
    """
)


def test_after_numba_omp_layer_in_a_fresh_interpreter():
    env = {"NUMBA_THREADING_LAYER": "omp"}
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    nested_before = [s for s in out["before"] if s[1]]
    if not nested_before:
        pytest.skip(f"numba's layer left no runtime nested here: {out['before']}")
    assert out["changed"] == len(nested_before)
    assert not any(s[1] for s in out["inside"])
    assert not any(s[1] for s in out["in_torch_threads"])
    assert out["after"] == out["before"] == out["after_torch_threads"]
