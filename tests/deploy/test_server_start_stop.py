"""``ptyflow server start`` listens on 127.0.0.1 only, sends no telemetry, and SIGTERM
stops it with everything it started: the port is free afterwards (issue #22, 6 and 7a).

One real server start (~35-90 s on 2 busy cores). SIGKILL of the command is covered with a
stand-in child in test_lifeline.py (same code path, cli_server._foreground).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from urllib.parse import urlsplit

import psutil
import pytest

from tests.deploy.helpers import start_cli_server
from tests.deploy.proc_helpers import gone, listen_addresses, port_free, wait_for

# slow: ~20 s each, a real Prefect server start (run with -m slow)
pytestmark = [pytest.mark.timeout(400), pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="process-group and PR_SET_PDEATHSIG checks")]  # fmt: skip
BOUND_S = 10.0


def test_sigterm_stops_server_and_frees_port(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PTYFLOW_BIND_HOST", "DO_NOT_TRACK")}  # fmt: skip
    env.update(OMP_NUM_THREADS="1", PREFECT_SERVER_ANALYTICS_ENABLED="true")  # forced off
    log = tmp_path / "server.log"

    tree: list[int] = []
    cmd = None
    try:
        t0 = time.monotonic()
        cmd, url = start_cli_server(tmp_path / "home", env, log, 240)
        t_up = time.monotonic() - t0
        port = urlsplit(url).port
        tree = [p.pid for p in psutil.Process(cmd.pid).children(recursive=True)]
        assert tree, "no Prefect server child"
        socks = listen_addresses(cmd.pid)
        assert port in {p for _, p in socks} and {ip for ip, _ in socks} == {"127.0.0.1"}, socks
        time.sleep(3)  # the telemetry heartbeat runs at startup
        cmd.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        cmd.wait(60)
        t_stop = time.monotonic() - t0
        left = [pid for pid in tree if wait_for(lambda pid=pid: gone(pid), BOUND_S) is None]
        assert not left, f"still running after SIGTERM: {left}"
        assert wait_for(lambda: port_free(port), BOUND_S) is not None, f"port {port} open"
        print(f"healthy after {t_up:.1f} s; stopped {t_stop:.2f} s after SIGTERM")
        assert "telemetry" not in log.read_text().lower(), log.read_text()[-3000:]
    finally:
        if cmd is not None:
            cmd.kill()
            cmd.wait()
        for pid in tree:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
