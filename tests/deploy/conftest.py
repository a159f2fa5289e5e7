"""Fixtures for the deployment tests: a real Prefect server on 127.0.0.1 (SQLite in a
temporary PREFECT_HOME), initialised by deployments/init.py, with a process worker.

Every process is started in its own process group and stopped by PID in ``finally``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from flows.serve import (
    REPO_ROOT,
    server_env,
    start_healthy_server,
    start_worker,
    stop_process,
)

STARTUP_S = 240  # a Prefect server takes 20-90 s to start on 2 busy cores


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """``{"url", "home", "facility", "env", "init"}`` of a running, initialised server."""
    home = tmp_path_factory.mktemp("prefect-home")
    facility = tmp_path_factory.mktemp("facility")
    env = server_env(
        home=home,
        database_url=f"sqlite+aiosqlite:///{home}/prefect.db",
        extra={
            # Recently changed deployments get their scheduled runs within seconds.
            "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
            "PTYFLOW_FACILITY_ROOT": str(facility),
            "OMP_NUM_THREADS": "1",
        },
    )
    server = worker = None
    logs = home / "server.log", home / "worker.log"
    try:
        server, url = start_healthy_server(env=env, log=logs[0], timeout=STARTUP_S)
        client_env = {**env, "PREFECT_API_URL": url}
        t0 = time.monotonic()
        init = subprocess.run(
            [sys.executable, str(REPO_ROOT / "deployments" / "init.py"), "--api-url", url],
            env=client_env, cwd="/", capture_output=True, text=True, timeout=STARTUP_S,
        )  # fmt: skip
        assert init.returncode == 0, init.stdout + init.stderr
        worker = start_worker(env=client_env, log=logs[1])
        yield {"url": url, "home": home, "facility": facility, "env": client_env,
               "init": init, "init_s": time.monotonic() - t0, "logs": logs}  # fmt: skip
    finally:
        stop_process(worker)
        stop_process(server)
