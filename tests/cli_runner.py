"""``ptyflow`` as a user types it: a subprocess with a private Prefect home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def ptyflow_cli(cwd: Path, timeout: float = 600):
    """A function ``ptyflow(*args) -> CompletedProcess`` running the CLI in ``cwd``.

    The environment drops any ``PREFECT_API_URL`` / ``PTYFLOW__*`` of the caller (the CLI
    then starts its own temporary server) and sets one torch thread and no telemetry.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API_URL", "PTYFLOW__"))}  # fmt: skip
    env.update(PREFECT_HOME=str(Path(cwd) / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", OMP_NUM_THREADS="1")  # fmt: skip

    def ptyflow(*args):
        cmd = [sys.executable, "-c", "from flows.cli import app; app()", *args]
        return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    return ptyflow
