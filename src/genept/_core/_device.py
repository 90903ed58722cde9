"""One home for device and thread-count resolution.

Every public function with a ``device=`` or ``n_jobs=`` argument resolves it here, so
``"auto"`` means the same everywhere, :attr:`genept.settings.device` and
:attr:`genept.settings.n_jobs` are honoured everywhere, and a device that cannot be
used always raises the same exception, :class:`DeviceError`.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "DeviceError",
    "available_cores",
    "busy_cores",
    "check_device_name",
    "openmp_unnested",
    "resolve_device",
    "resolve_n_jobs",
    "torch_n_threads",
    "torch_threads",
]

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class DeviceError(ValueError, RuntimeError):
    """A device that is malformed or not available on this machine.

    Subclasses both :class:`ValueError` (a bad argument) and :class:`RuntimeError`
    (what earlier versions raised for a missing GPU), so existing handlers keep working.
    """


def check_device_name(device: Any) -> str:
    """Syntax check of a device name without importing torch; returns it as a string.

    Accepts ``"auto"``, ``"cpu"``, ``"mps"``, ``"cuda"``, ``"cuda:N"`` and
    :class:`torch.device` objects.
    """
    name = str(device) if type(device).__name__ == "device" else device
    if not isinstance(name, str) or not _DEVICE_RE.match(name):
        raise DeviceError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}"
        )
    return name


def resolve_device(device: Any = None) -> str:
    """The device to run on, as a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Parameters
    ----------
    device
        ``None`` or ``"auto"``: :attr:`genept.settings.device`, whose default
        ``"auto"`` picks CUDA when torch sees a GPU, else the CPU. ``"cpu"``,
        ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`.

    Raises
    ------
    DeviceError
        The name is malformed, or the device is not available (e.g. ``"cuda"``
        without a GPU): the message names the devices that are.

    Examples
    --------
    >>> from genept._core._device import resolve_device
    >>> resolve_device("cpu")
    'cpu'
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        from .._settings import settings

        device = settings.device
    name = check_device_name(device)
    if name == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        if name == "auto":
            return "cpu"
        raise DeviceError(
            f"device={name!r} needs torch, which is not installed; use 'cpu'"
        ) from None
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError("device='mps' but torch sees no Apple GPU; use 'cpu' or 'auto'")
        return name
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device={name!r} but torch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "use device='cpu' or 'auto'"
        )
    if ":" in name:
        idx, count = int(name.split(":")[1]), torch.cuda.device_count()
        if idx >= count:
            raise DeviceError(
                f"device={name!r} but torch sees {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})"
            )
    return name


def resolve_n_jobs(n_jobs: int | None = None) -> int:
    """Number of CPU threads: ``None`` means :attr:`genept.settings.n_jobs` (default: all).

    Negative values count back from the number of cores (``-1``: all, ``-2``: all but
    one), as in joblib. ``0`` and non-integers are refused with :class:`ValueError`.

    Examples
    --------
    >>> from genept._core._device import resolve_n_jobs
    >>> resolve_n_jobs(2)
    2
    """
    if n_jobs is None:
        from .._settings import settings

        n_jobs = settings.n_jobs
    if n_jobs is None:
        return _n_cores()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer):
        raise ValueError(f"n_jobs must be an integer or None, got {n_jobs!r}")
    n_jobs = int(n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs=0 is not a number of threads; use None or -1 for all cores")
    if n_jobs < 0:
        return max(1, _n_cores() + 1 + n_jobs)
    return n_jobs


def _n_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def _cgroup_cpus() -> float | None:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota, if any."""
    for quota_file, period_file in (
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ):
        try:
            with open(quota_file) as f:
                parts = f.read().split()
            if period_file is not None:
                with open(period_file) as f:
                    parts = parts[:1] + f.read().split()[:1]
        except (OSError, ValueError):
            continue
        if len(parts) >= 2 and parts[0] not in ("max", "-1"):
            try:
                quota, period = float(parts[0]), float(parts[1])
            except ValueError:
                continue
            if quota > 0 and period > 0:
                return quota / period
    return None


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask, capped by a cgroup CPU quota.

    Examples
    --------
    >>> from genept._core._device import available_cores
    >>> available_cores() >= 1
    True
    """
    n = _n_cores()
    quota = _cgroup_cpus()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return n


def busy_cores(samples: int = 5, interval: float = 0.01) -> float:
    """Cores kept busy right now by other work: runnable tasks, minus this thread.

    Reads the instantaneous count of runnable tasks in ``/proc/loadavg`` (4th field,
    ``running/total``) ``samples`` times, ``interval`` seconds apart, and takes the
    median less one (the calling thread itself). Unlike the 1-minute load average this
    sees a process that started a second ago and forgets this process's own earlier
    work. Without ``/proc/loadavg`` (macOS) it falls back to
    :func:`os.getloadavg` (1-minute average), and to 0 where neither exists.

    Examples
    --------
    >>> from genept._core._device import busy_cores
    >>> busy_cores() >= 0
    True
    """
    counts = []
    for i in range(max(1, samples)):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            counts = []
            break
        if i + 1 < samples:
            time.sleep(interval)
    if counts:
        return max(0.0, float(statistics.median(counts)) - 1.0)
    try:
        return max(0.0, float(os.getloadavg()[0]))
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return 0.0


def torch_n_threads(n_jobs: int | None = None) -> int:
    """Intra-op threads for torch on CPU: ``n_jobs``, :attr:`genept.settings.n_jobs`, or auto.

    Auto (both ``None``) takes the cores this process may use (:func:`available_cores`:
    affinity and cgroup quota) minus the cores other processes keep busy now
    (:func:`busy_cores`), at least 1. torch's own default (one thread per core, not per
    *free* core) makes its spin-waiting thread pool fight other processes for the
    cores: next to two busy processes on 2 cores, scMPT on pbmc68k took 4-5 times as
    long with two threads as with one, 34 times where nested OpenMP was on as well
    (:func:`openmp_unnested`; ``benchmarks/bench_openmp_nesting.py --busy 2``). An
    explicit ``n_jobs`` (positive, or ``-k`` for all cores but ``k - 1``) is used as
    given.

    Examples
    --------
    >>> from genept._core._device import torch_n_threads
    >>> torch_n_threads(1)
    1
    >>> 1 <= torch_n_threads() <= available_cores()
    True
    """
    if n_jobs is None:
        from .._settings import settings

        n_jobs = settings.n_jobs
    if n_jobs is not None:
        return resolve_n_jobs(n_jobs)
    cores = available_cores()
    return max(1, min(cores, cores - round(busy_cores())))


def _openmp_libraries() -> list[tuple[str, Any]]:
    """``(prefix, ctypes handle)`` of each OpenMP runtime loaded here (threadpoolctl).

    ``prefix`` is threadpoolctl's name of the runtime: ``"libgomp"`` (GNU),
    ``"libiomp"`` (Intel) or ``"libomp"`` (LLVM). Nothing is loaded by looking.
    """
    import warnings

    try:
        from threadpoolctl import ThreadpoolController

        with warnings.catch_warnings():  # its notes on mixed runtimes are not ours to show
            warnings.simplefilter("ignore")
            controllers = ThreadpoolController().select(user_api="openmp").lib_controllers
    except Exception:
        return []
    out = []
    for c in controllers:
        lib = getattr(c, "dynlib", None) or getattr(c, "_dynlib", None)  # 3.1: private
        if lib is not None:
            out.append((str(getattr(c, "prefix", "")), lib))
    return out


def _nesting_on(lib: Any, prefix: str = "libgomp") -> tuple[bool, int]:
    """Whether ``lib`` lets a parallel region open another team, and its level limit.

    GNU's runtime before GCC 11 reports a level limit above 1 with nesting off, so its
    (deprecated) ``omp_get_nested`` decides there; other runtimes, which may print a
    deprecation note for that call, are read from the level limit alone.
    """
    levels = int(lib.omp_get_max_active_levels())
    if prefix != "libgomp":
        return levels > 1, levels
    try:
        nested = bool(lib.omp_get_nested())
    except AttributeError:  # a build without the deprecated call
        nested = True
    return nested and levels > 1, levels


_UNNEST_LOCK = threading.Lock()
_unnest: dict[str, Any] = {"depth": 0, "changed": []}


@contextmanager
def openmp_unnested() -> Iterator[int]:
    """Run a block with nested OpenMP parallelism off; restored on exit, also after an error.

    numba's OpenMP threading layer -- the one scanpy's ``highly_variable_genes``,
    ``neighbors`` and ``umap`` start where TBB is not installed -- turns nesting on in
    the OpenMP runtime it loads. When that happens before ``import torch``, torch
    shares the runtime (same ``libgomp.so.1``), and once anything has called
    ``torch.set_num_threads`` (which turns MKL's dynamic threading off), every
    parallel element-wise torch op that MKL evaluates (``sqrt``, ``exp``, ``erf``)
    opens a nested team from inside torch's own worker threads: a new thread per
    call, milliseconds per op. On pbmc68k, MiniLM encoding then ran 16-18 times and
    scMPT 5-7 times slower than with torch imported first, quiet / busy
    (``benchmarks/bench_openmp_nesting.py``).

    Inside this block every loaded runtime that has nesting on gets one active level.
    GNU's setting is process-wide, so blocks entered by several threads at once share
    one change: the first entry makes it and the last exit restores the saved limit,
    unless something inside changed it again. numba and the rest of the session keep
    their setting outside.

    Yields the number of runtimes changed (0 where nesting was already off, or where
    no OpenMP runtime, or threadpoolctl, is present).

    Examples
    --------
    >>> from genept._core._device import openmp_unnested
    >>> with openmp_unnested() as changed:
    ...     changed >= 0
    True
    """
    with _UNNEST_LOCK:
        _unnest["depth"] += 1
        if _unnest["depth"] == 1:
            changed = _unnest["changed"] = []
            try:
                for prefix, lib in _openmp_libraries():
                    try:
                        on, levels = _nesting_on(lib, prefix)
                    except (AttributeError, OSError, ValueError):  # not a readable runtime
                        continue
                    if on:
                        changed.append((lib, levels))  # before the change: always undone
                        lib.omp_set_max_active_levels(1)
            except BaseException:
                _unnest_exit()
                raise
        n_changed = len(_unnest["changed"])
    try:
        yield n_changed
    finally:
        with _UNNEST_LOCK:
            _unnest_exit()


def _unnest_exit() -> None:
    """Leave one :func:`openmp_unnested` block (lock held); the last one restores."""
    _unnest["depth"] -= 1
    if _unnest["depth"] > 0:
        return
    changed, _unnest["changed"] = _unnest["changed"], []
    for lib, levels in reversed(changed):
        try:
            if int(lib.omp_get_max_active_levels()) == 1:  # not changed again inside
                lib.omp_set_max_active_levels(levels)
        except (AttributeError, OSError, ValueError):
            continue


@contextmanager
def torch_threads(n_jobs: int | None = None) -> Iterator[int]:
    """Run a block with torch's intra-op thread pool sized by :func:`torch_n_threads`.

    torch's thread count is process-wide; it is restored on exit, also after an error.
    The block also runs with nested OpenMP parallelism off (:func:`openmp_unnested`).
    Yields the number of threads used.

    Examples
    --------
    >>> import torch
    >>> from genept._core._device import torch_threads
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1) as n:
    ...     n, torch.get_num_threads()
    (1, 1)
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    n = torch_n_threads(n_jobs)
    before = torch.get_num_threads()
    with openmp_unnested():
        if n != before:
            torch.set_num_threads(n)
        try:
            yield n
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
