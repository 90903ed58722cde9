"""One home for device and thread-count resolution.

Every public function with a ``device=`` or ``n_jobs=`` argument resolves it here, so
``"auto"`` means the same everywhere, :attr:`genept.settings.device` and
:attr:`genept.settings.n_jobs` are honoured everywhere, and a device that cannot be
used always raises the same exception, :class:`DeviceError`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

__all__ = ["DeviceError", "check_device_name", "resolve_device", "resolve_n_jobs"]

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
