"""A run store's lock held by another process, for the tests of what is refused meanwhile."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_HOLDER = ("import sys, time; from storage.lock import StoreLock; "
           "StoreLock(sys.argv[1], sys.argv[2]).acquire(); print('locked', flush=True); "
           "time.sleep(120)")  # fmt: skip


@contextlib.contextmanager
def lock_held_elsewhere(store, command: str = "other-run") -> Iterator[subprocess.Popen]:
    """Another process holds ``store``'s lock (its record names ``command``) while the
    block runs; killed afterwards (the kernel then drops the lock)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store), command], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked", "the holder did not take the lock"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
