"""Smoke test of the benchmark harness (no peers, tiny grids, seconds).

Runs the quality and speed suites through ``python -m bench``'s entry point on tiny
simulated sets with ptyflow's own PIE engines, checks the JSON they write, renders the
report, and checks the pieces that do not need the peer packages installed: the
torchvision shim's Gaussian blur and the peer launcher's graceful failure.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bench.__main__ import main
from bench.peers import _shim


def test_quality_and_speed_suites_write_json_and_report(tmp_path):
    rc = main(
        [
            "quality",
            "--quick",
            "--no-peers",
            "--out",
            str(tmp_path),
            "--epochs",
            "2",
            "--fractions",
            "0.5",
            "--engines",
            "rpie",
            "epie",
        ]
    )
    assert rc == 0
    q = json.loads((tmp_path / "quality-cpu-quick.json").read_text())
    assert q["suite"] == "quality" and q["device"] == "cpu" and not q["partial"]
    assert q["machine"]["cores_logical"] >= 1 and q["load_average_start"] is not None
    assert {r["engine"] for r in q["rows"]} == {"rpie", "epie"}
    for r in q["rows"]:
        assert r["ok"], r
        assert 0 < r["complex_error"] < 1.5
        assert r["fraction"] == 0.5 and r["n_frames"] == 100
        assert [c["epoch"] for c in r["curve"]] == [1, 2]
        assert all(c["seconds"] > 0 for c in r["curve"])
        assert r["times"]["epoch_s_median"] > 0
    assert q["engines"] == ["epie", "rpie"] or q["engines"] == ["rpie", "epie"]

    rc = main(
        [
            "speed",
            "--quick",
            "--no-peers",
            "--out",
            str(tmp_path),
            "--speed-epochs",
            "2",
            "--frame-size",
            "32",
            "--engines",
            "rpie",
        ]
    )
    assert rc == 0
    s = json.loads((tmp_path / "speed-cpu-quick.json").read_text())
    assert s["fft_floor_s"] > 0
    row = s["rows"][0]
    assert row["ok"] and row["times"]["x_fft_floor"] > 1
    assert set(row["time_to_error"]) == {"0.3", "0.2", "0.1", "0.05"}

    rc = main(["report", "--out", str(tmp_path)])
    assert rc == 0
    md = (tmp_path / "report.md").read_text()
    assert "## Headline" in md and "Quality vs data kept" in md and "FFT floor" in md
    assert (tmp_path / "quality-vs-data-quality-cpu-quick.png").stat().st_size > 0
    assert (tmp_path / "time-vs-error-speed-cpu-quick.png").stat().st_size > 0


def test_shim_gaussian_blur_is_a_normalised_separable_gaussian():
    img = torch.zeros(1, 1, 15, 15)
    img[..., 7, 7] = 1.0
    out = _shim.gaussian_blur(img, [9, 9], [3.0, 3.0])
    x = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / 3.0) ** 2)
    k = k / k.sum()
    np.testing.assert_allclose(
        out[0, 0, 3:12, 3:12].numpy(), (k[:, None] * k[None]).numpy(), rtol=1e-5, atol=1e-7
    )
    assert math.isclose(float(out.sum()), 1.0, rel_tol=1e-5)
    z = torch.complex(img, 2 * img)
    zb = _shim.gaussian_blur(z, 9, 3.0)
    np.testing.assert_allclose(zb.imag.numpy(), 2 * zb.real.numpy(), rtol=1e-6)
    blur = _shim.GaussianBlur(kernel_size=(9, 9), sigma=(3, 3))
    np.testing.assert_allclose(blur(img).numpy(), out.numpy())


def test_peer_launcher_reports_a_missing_interpreter(monkeypatch):
    from bench import peers

    peers.probe.cache_clear()
    monkeypatch.setenv("PTYFLOW_PEERS_PYTHON", "/nonexistent/python")
    try:
        assert peers.available() == {n: False for n in peers.PEER_ENGINES}
        assert "error" in peers.probe()
        rec = peers.run_peer(
            "ptychi-rpie",
            {"epochs": 1, "object_shape": [8, 8]},
            {
                "frames": np.zeros((1, 4, 4), np.float32),
                "positions_px": np.zeros((1, 2)),
                "probe": np.ones((4, 4), np.complex64),
            },
            timeout=30,
        )
        assert rec["ok"] is False and rec["error"]
    finally:
        peers.probe.cache_clear()


@pytest.mark.parametrize("kind", ["true", "defocus:1.1"])
def test_probe_prior_keeps_the_true_power(kind):
    from bench.suite_common import farfield_dataset, probe_prior

    d = farfield_dataset(frame_size=32, n_positions=9, overlap=0.6, dose=None)
    p = probe_prior(d, kind)
    true = d.ground_truth["probe"]
    assert p.shape == true.shape and p.dtype == np.complex64
    assert np.isclose(np.sum(np.abs(p) ** 2), np.sum(np.abs(true) ** 2), rtol=1e-4)


def test_two_worker_field_throughput_sums_both_processes():
    """``bench_rnf_speed.workers_throughput`` (the "2 M coordinates/s on 2 cores" figure of
    issue #18): two one-thread processes each report a positive rate, and the headline is
    their sum."""
    from bench.bench_rnf_speed import workers_throughput
    from ptytasks.engines.rnf import RNFOptions

    r = workers_throughput(32, RNFOptions(), workers=2, seconds=0.3)
    rates = [w["coords_per_s"] for w in r["per_worker"]]
    assert len(rates) == 2 and all(v > 0 and w["reps"] >= 1
                                   for v, w in zip(rates, r["per_worker"], strict=True))
    assert r["coords_per_s"] == pytest.approx(sum(rates))
    assert r["threads_per_worker"] == 1


def test_rnf_summary_skips_the_speed_json_beside_the_scenarios(tmp_path):
    """bench_rnf writes rnf.md from every rnf-*.json in its folder; bench_rnf_speed's
    rnf-speed-cpu.json lives there too and holds no scenario (it used to end the whole
    benchmark run with a KeyError after all the scenarios had run)."""
    from bench.bench_rnf import markdown, stored_results

    doc = {"scenario": "coded", "results": {"n_frames": 25, "complex_error": 0.03}}
    (tmp_path / "rnf-coded.json").write_text(json.dumps(doc))
    (tmp_path / "rnf-speed-cpu.json").write_text(json.dumps({"suite": "rnf-speed"}))
    stored = stored_results(tmp_path)
    assert stored == {"coded": doc["results"]}
    assert "| coded, 25 frames | error 0.03 |" in markdown(stored)
