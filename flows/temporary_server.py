"""The temporary Prefect server of one ``ptyflow run``: Prefect's own ephemeral server,
started so that it cannot outlive the command and never phones home.

Prefect's :class:`~prefect.server.api.server.SubprocessASGIServer` starts
``python -m uvicorn ... prefect.server.api.server:create_app`` on 127.0.0.1 and stops it
from ``atexit``, which a SIGKILLed (or SIGTERMed, without a handler) parent never runs.
:class:`TemporaryServer` starts the same command

- under :func:`flows.lifeline.guarded` (PR_SET_PDEATHSIG = SIGKILL): the kernel kills the
  server the moment the process that started it dies, however it dies;
- in a process group of its own, which :meth:`TemporaryServer.stop` kills as a whole;
- with telemetry off (:data:`flows.telemetry.TELEMETRY_OFF`): Prefect's server sends a
  heartbeat to prefect.io otherwise, and prints "Failed to send telemetry" where the
  network is closed.

Imported lazily (it imports the Prefect server) by :func:`flows.serve.prefect_api`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import prefect
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings.context import get_current_settings

from flows.lifeline import guarded
from flows.telemetry import TELEMETRY_OFF


class TemporaryServer(SubprocessASGIServer):
    """Prefect's ephemeral API server, on 127.0.0.1, bound to this process's life.

    Use as Prefect's: ``TemporaryServer(port).start(timeout)``, ``.api_url``, ``.stop()``.
    The host is always 127.0.0.1: only this machine's processes (the flow, local Dask
    workers) talk to it; remote workers need a real server (docs/operations.md).
    """

    def _run_uvicorn_command(self) -> subprocess.Popen:
        # The same command and environment as SubprocessASGIServer._run_uvicorn_command
        # (Prefect 3.8), plus the lifeline, a process group and telemetry off -- last, so
        # neither the environment nor a profile can turn the heartbeat back on.
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **get_current_settings().to_environment_variables(exclude_unset=True),
            **TELEMETRY_OFF,
        }
        env.pop("PREFECT_API_URL", None)  # the server itself is no client
        args = [sys.executable, "-m", "uvicorn", "--app-dir",
                str(prefect.__module_path__.parent), "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]  # fmt: skip
        return subprocess.Popen(guarded(args, signal.SIGKILL), env=env,
                                start_new_session=True)  # fmt: skip

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 5 s), then anything left in its group."""
        proc = self.server_process
        super().stop()
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
