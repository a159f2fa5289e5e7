"""``ptyflow demo`` and ``ptyflow run`` end to end, as a user runs them: a subprocess with
no PREFECT_API_URL, so the command starts ONE temporary Prefect server for itself and its
Dask workers.

The demo runs the default engine, RNF (50 epochs), and must beat rPIE at equal iterations
on the same file through the same pipeline. Measured at d4e8acf on the 2-core VM (load
1.1-1.4): 70 s wall for the whole command (the issue's target: under 2 minutes; the test's
limit is a hang guard, timings live in benchmarks), RNF 0.0162 against rPIE 0.0215 at 50
iterations complex error (at 0811f2e: 92 s, RNF 0.0189; rPIE 0.0222 at 30, 0.0212 at
100); the demo cut to 5 RNF epochs scores 0.25 and fails the comparison. The default run
checks the command's stages, store, metrics and previews with ``--epochs 20`` (60 s); the
full demo and the comparison are slow."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(900)
DEMO_LIMIT_S = 300


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API_URL", "PTYFLOW__"))}  # fmt: skip
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")  # fmt: skip
    return env


def _ptyflow(args, tmp_path, timeout=600):
    cmd = [sys.executable, "-c", "from flows.cli import app; app()", *args]
    return subprocess.run(cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _demo(tmp_path_factory, *extra):
    d = tmp_path_factory.mktemp("demo")
    t0 = time.monotonic()
    res = _ptyflow(["demo", "--out", "out", "--verbose", *extra], d)
    return d / "out", res, time.monotonic() - t0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo exactly as a user runs it (RNF, 50 epochs; ~100 s): for the slow tests."""
    return _demo(tmp_path_factory)


@pytest.fixture(scope="module")
def demo_quick(tmp_path_factory):
    """The same command with ``--epochs 20`` for the default run: every stage, the store,
    metrics and previews, one Prefect server (measured: 60 s wall against ~100 s at 50
    epochs; phase SSIM 0.97, complex error 0.028)."""
    return _demo(tmp_path_factory, "--epochs", "20")


def test_demo_leaves_store_metrics_and_previews_in_time(demo_quick):
    from storage.store import RunStore

    out, res, wall = demo_quick
    print(f"ptyflow demo: {wall:.0f} s wall")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert wall < DEMO_LIMIT_S
    store = RunStore(out / "demo.zarr", "r")
    assert store.is_complete("metrics")
    assert len([k for k, _ in store.root["reconstruct"].groups()]) == 4
    assert store.root["reconstruct/t0000"].attrs["engine"] == "rnf"  # the default engine
    rows = dict(csv.reader(open(out / "demo_metrics.csv")))
    assert float(rows["truth_phase_ssim"]) > 0.8
    for part in ("amplitude", "phase"):
        png = out / f"demo_{part}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One Prefect API for the run: the command's own temporary server, none per worker.
    log = res.stdout + res.stderr
    assert log.count("ptyflow: temporary Prefect API") == 1, log[-4000:]
    assert "Starting temporary server" not in log  # no worker started a server of its own
    assert "demo finished" in res.stdout


@pytest.mark.slow  # the full demo (~100 s) and rPIE beside it (~13 s)
def test_demo_rnf_beats_rpie_on_the_same_file(demo, tmp_path):
    from flows import stages
    from flows.params import EngineParams, PipelineParams
    from tests.stage_runner import run_stages

    out, res, _ = demo
    assert res.returncode == 0
    rows = dict(csv.reader(open(out / "demo_metrics.csv")))
    rpie_engine = EngineParams(engine="rpie", epochs=50, learn_probe=False)
    p = PipelineParams(input=str(out / "demo.cxi"), store=str(tmp_path / "rpie.zarr"),
                       tiling={"grid": (2, 2)}, engine=rpie_engine)  # fmt: skip
    run_stages(p, evaluate=False)
    rpie = stages.evaluate(p.store, p.evaluation)["truth_complex_error"]
    assert float(rows["truth_complex_error"]) < rpie, (rows["truth_complex_error"], rpie)


@pytest.mark.slow  # ~50 s (two temporary Prefect servers); the flow-level rerun test
# (tests/flows/test_pipeline.py) covers resuming in the default run
def test_run_command_with_progress_and_resume(demo_quick, tmp_path):
    from storage.store import RunStore

    out, res, _ = demo_quick
    assert res.returncode == 0
    args = [
        "run",
        str(out / "demo.cxi"),
        "--out",
        str(tmp_path / "r.zarr"),
        "--engine",
        "epie",
        "--keep",
        "0.6",
        "--epochs",
        "3",
        "--grid",
        "2x1",
        "--cluster",
        "none",
    ]
    first = _ptyflow(args, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "r.zarr" in first.stdout and "━" in first.stdout  # the progress bar
    store = RunStore(tmp_path / "r.zarr", "r")
    assert (
        store.root["subsample/kept"].shape[0] == round(0.6 * 100)
        or 0.5 < store.root["subsample/kept"].shape[0] / 100 < 0.7
    )
    assert store.root["reconstruct/t0000"].attrs["engine"] == "epie"
    done = store.marker("reconstruct/t0000")["completed_at"]
    again = _ptyflow(args, tmp_path)  # resumes: every step is already complete
    assert again.returncode == 0
    assert RunStore(tmp_path / "r.zarr", "r").marker("reconstruct/t0000")["completed_at"] == done
    z = tmp_path / "r.npz"
    assert _ptyflow(["export", str(tmp_path / "r.zarr"), str(z)], tmp_path).returncode == 0
    assert np.load(z)["positions"].shape[1] == 2
