"""A benchmark worker run in a fresh Python process, optionally next to busy cores.

``busy`` processes spinning ``while True: pass`` are started before the worker and
killed after it (by their own pid, also on errors and SIGTERM unwinding), so the
worker competes for the cores as it would on a machine other work keeps busy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def run_worker(code: str, args: list[str], *, busy: int = 0, timeout: float = 600) -> dict | None:
    """Run ``python -c code *args``; its last stdout line parsed as JSON, ``None`` on timeout."""
    hogs = []
    try:
        for _ in range(busy):
            hogs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        if hogs:
            time.sleep(1.0)  # let the scheduler see them
        try:
            out = subprocess.run(
                [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return None
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for h in hogs:
            h.kill()
            h.wait()
