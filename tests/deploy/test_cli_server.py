"""``ptyflow server start | deploy | worker`` as an operator runs them (a server of its
own), and the UI screenshot script (slow)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from flows.serve import REPO_ROOT, server_env, stop_process
from tests.deploy.helpers import CLI, start_cli_server

pytestmark = pytest.mark.timeout(900)


def test_server_start_deploy_worker(tmp_path):
    env = server_env(home=tmp_path / "home")
    env.pop("PREFECT_API_URL", None)
    env["PTYFLOW_FACILITY_ROOT"] = str(tmp_path / "facility")
    server = worker = None
    try:
        server, url = start_cli_server(tmp_path / "home", env, tmp_path / "server.log", 240)
        res = subprocess.run([*CLI, "server", "deploy", "--api-url", url], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert "deployed: pipeline/pipeline" in res.stdout
        assert (tmp_path / "facility" / "raw").is_dir()
        log = tmp_path / "worker.log"
        with open(log, "wb") as f:
            worker = subprocess.Popen([*CLI, "server", "worker", "--api-url", url], env=env,
                                      stdout=f, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        t0 = time.monotonic()
        while "started" not in log.read_text().lower() and time.monotonic() - t0 < 120:
            assert worker.poll() is None, log.read_text()
            time.sleep(1)
        import httpx

        t0, workers = time.monotonic(), []
        while not workers and time.monotonic() - t0 < 60:  # the worker's first heartbeat
            workers = httpx.post(f"{url}/work_pools/ptyflow-process/workers/filter").json()
            time.sleep(1)
        assert workers, "no worker registered with the ptyflow-process pool"
    finally:
        stop_process(worker)
        stop_process(server)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium (apt-get install)")
def test_screenshot_script(tmp_path):
    out = tmp_path / "ui.png"
    script = REPO_ROOT / "scripts" / "screenshot_ui.py"
    res = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    from PIL import Image

    im = Image.open(out)
    assert im.width == 1280 and im.height > 1000
