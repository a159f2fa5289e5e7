#!/usr/bin/env python
"""Make docs/ui-screenshot.png: the Prefect UI showing a completed ``pipeline`` run.

The image stacks two pages of the UI: the flow run (state, task graph, Artifacts tab with
the ``metrics`` table and ``summary`` markdown) and the ``summary`` artifact itself.
Starts a throw-away Prefect server (SQLite in a temporary PREFECT_HOME, random port on
127.0.0.1), runs deployments/init.py, starts a process worker, triggers the ``pipeline``
deployment on a small simulated dataset, waits for it, and photographs the flow run page
with headless Chromium (Debian: ``apt-get install chromium``). Every process it starts is
stopped by PID at the end.

Usage::

    python scripts/screenshot_ui.py [--out docs/ui-screenshot.png] [--tab Artifacts]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("no Chromium found: apt-get install -y chromium")


def shoot(url: str, out: Path, size=(1600, 1000), wait_ms: int = 20000) -> None:
    """Screenshot ``url`` after letting the single-page app render for ``wait_ms``."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}",
               f"--screenshot={out}", url]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        from flows.serve import stop_process

        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_process(proc)
    if not out.exists():
        raise RuntimeError(f"Chromium wrote no screenshot for {url}")


def completed_run(work: Path, url: str, env: dict):
    """Trigger the ``pipeline`` deployment on a small dataset; the finished flow run."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.runner import demo_dataset

    data = demo_dataset(work / "demo.cxi")
    params = {"input": str(data), "store": str(work / "demo.zarr"), "tiling": {"grid": [2, 2]},
              "engine": {"engine": "rpie", "epochs": 20, "learn_probe": False},
              "cluster": {"kind": "local", "n_workers": 2, "torch_threads": 1}}  # fmt: skip
    with temporary_settings(updates={PREFECT_API_URL: url}):
        run = run_deployment("pipeline/pipeline", parameters={"params": params},
                             flow_run_name="ptyflow-demo", timeout=900,
                             poll_interval=3)  # fmt: skip
    if not run.state.is_completed():
        raise RuntimeError(f"pipeline run ended {run.state}")
    return run


def summary_artifact(url: str, flow_run_id) -> str:
    """Id of the run's ``summary`` markdown artifact."""
    import anyio
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def find():
        async with get_client() as client:
            f = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            return [a for a in await client.read_artifacts(artifact_filter=f)
                    if a.key == "summary"]  # fmt: skip

    with temporary_settings(updates={PREFECT_API_URL: url}):
        (art,) = anyio.run(find)
    return str(art.id)


def stack(images: list[Path], out: Path, width: int) -> None:
    """Stack screenshots vertically, scaled to ``width``, with a thin separator."""
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in images]
    ims = [im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
           for im in ims]  # fmt: skip
    gap = 6
    canvas = Image.new("RGB", (width, sum(im.height for im in ims) + gap * (len(ims) - 1)),
                       (90, 90, 90))  # fmt: skip
    y = 0
    for im in ims:
        canvas.paste(im, (0, y))
        y += im.height + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)


def main(argv=None) -> int:
    from flows.serve import (
        deploy_all,
        server_env,
        start_healthy_server,
        start_worker,
        stop_process,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "ui-screenshot.png")
    ap.add_argument("--width", type=int, default=1280, help="width of the final PNG")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ptyflow-ui-"))
    env = server_env(home=work / "home",
                     database_url=f"sqlite+aiosqlite:///{work}/home/prefect.db",
                     extra={"PTYFLOW_FACILITY_ROOT": str(work / "facility"),
                            "PREFECT_WORKER_QUERY_SECONDS": "2"})  # fmt: skip
    (work / "home").mkdir()
    server = worker = None
    try:
        server, url = start_healthy_server(env=env, log=work / "server.log", timeout=240)
        deploy_all(url, env={"PTYFLOW_FACILITY_ROOT": str(work / "facility")})
        worker = start_worker(env={**env, "PREFECT_API_URL": url}, log=work / "worker.log")
        run = completed_run(work, url, env)
        ui = f"{url.removesuffix('/api')}/v2"
        pages = [f"{ui}/runs/flow-run/{run.id}?tab=Artifacts",
                 f"{ui}/artifacts/artifact/{summary_artifact(url, run.id)}"]  # fmt: skip
        shots = []
        for i, page in enumerate(pages):
            print(f"photographing {page}", flush=True)
            shots.append(work / f"page{i}.png")
            shoot(page, shots[-1])
        stack(shots, args.out, args.width)
        print(f"wrote {args.out}")
    finally:
        stop_process(worker)
        stop_process(server)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
