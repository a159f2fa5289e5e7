"""The temporary Prefect server of ``ptyflow run`` (flows.serve.prefect_api) listens on
127.0.0.1 only, sends no telemetry, and dies with the process that started it when that
process is SIGKILLed: no finally, no atexit (issue #22, items 6 and 7a).

One real server start (~35-90 s on 2 busy cores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.deploy.proc_helpers import gone, listen_addresses, port_free, wait_for

# slow: ~20 s each, a real Prefect server start (run with -m slow)
pytestmark = [pytest.mark.timeout(400), pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="PR_SET_PDEATHSIG is Linux-only")]  # fmt: skip
STARTUP_S = 240
BOUND_S = 10.0

PARENT = """
    import time
    from flows.serve import prefect_api
    from flows.temporary_server import TemporaryServer

    with prefect_api(timeout={startup}) as url:
        print("API", url, TemporaryServer._instances[None].server_process.pid, flush=True)
        time.sleep(600)
"""


def test_sigkilled_parent_takes_its_temporary_server_along(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT.format(startup=STARTUP_S)))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "DO_NOT_TRACK")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1",
               PREFECT_PROFILES_PATH=str(tmp_path / "home" / "profiles.toml"),
               # ptyflow must turn the heartbeat off whatever the environment says.
               PREFECT_SERVER_ANALYTICS_ENABLED="true")  # fmt: skip
    log = tmp_path / "parent.log"
    with open(log, "wb") as f:  # the server writes to the same file (inherited)
        parent = subprocess.Popen([sys.executable, str(script)], env=env, stdout=f,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    server = None
    try:
        line = lambda: [x for x in log.read_text().splitlines() if x.startswith("API ")]  # noqa: E731
        t = wait_for(lambda: line() or parent.poll() is not None, STARTUP_S, step=0.5)
        assert t is not None and line(), log.read_text()[-3000:]
        _, url, pid = line()[0].split()
        server, port = int(pid), int(url.rsplit(":", 1)[1].split("/")[0])
        assert url.startswith("http://127.0.0.1:")
        socks = listen_addresses(server)
        assert port in {p for _, p in socks} and {ip for ip, _ in socks} == {"127.0.0.1"}, socks
        time.sleep(5)  # the telemetry heartbeat runs (and fails, offline) at startup
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        t_gone = wait_for(lambda: gone(server), BOUND_S)
        assert t_gone is not None, f"temporary server {server} outlived its SIGKILLed parent"
        assert wait_for(lambda: port_free(port), BOUND_S) is not None, f"port {port} open"
        print(f"startup {t:.1f} s; server gone {t_gone:.2f} s after SIGKILL")
        assert "telemetry" not in log.read_text().lower(), log.read_text()[-3000:]
    finally:
        parent.kill()
        parent.wait()
        if server is not None and not gone(server):
            os.killpg(server, signal.SIGKILL)
