"""``bench/gpu.sh``: the one-call GPU benchmark runs end to end in its CPU dry-run mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def test_dry_run_writes_provenanced_results(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", f"--out={out}"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    speed = json.loads((out / "rnf-speed-dryrun.json").read_text())
    assert speed["machine"]["git"]["commit"]
    (split,) = speed["epochs_split"]
    assert split["dataset"] == "sim-farfield-25x32"
    assert split["rnf_epoch_s"] > 0 and split["rpie_epoch_s"] > 0 and split["fft_floor_s"] > 0
    assert split["split_s"]["mlp_forward"] > 0 and split["split_s"]["encoding"] > 0
    assert speed["throughput"][0]["field"]["coords_per_s"] > 0
    assert speed["throughput"][0]["naive"]["coords_per_s"] > 0
    # the long steps are printed with the arguments they would run with, not run
    assert "dry run, not run:" in proc.stdout and "--cluster local" in proc.stdout
    assert "bench pipeline --device cpu" in proc.stdout
    assert "bench_fields.py --device cpu" in proc.stdout
    assert "collected" in (out / "pytest-gpu-dryrun.txt").read_text() or \
        "selected" in (out / "pytest-gpu-dryrun.txt").read_text()


def test_without_cuda_it_refuses_with_a_reason(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the real run would start")
    proc = subprocess.run(["bash", str(SCRIPT), f"--out={tmp_path}"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr


def test_unknown_argument_is_a_usage_error(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--fast"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage: bench/gpu.sh" in proc.stderr


def test_a_copied_tree_takes_its_commit_from_the_sender(monkeypatch):
    """The GPU machine's copy carried the session's starting .git: the results named that
    commit (dirty) instead of the tree that ran. The sender's variables win."""
    sys.path.insert(0, str(ROOT))
    from bench._machine import git_state

    monkeypatch.delenv("PTYFLOW_GIT_COMMIT", raising=False)
    assert git_state().get("source") is None  # this checkout: from git itself
    monkeypatch.setenv("PTYFLOW_GIT_COMMIT", "abc123")
    monkeypatch.setenv("PTYFLOW_GIT_DIRTY", "0")
    assert git_state() == {"commit": "abc123", "dirty": False, "source": "env"}
