"""Acceptance runs of the residual neural-field engine (slow: minutes each on 2 CPU cores).

Each test runs a scenario of ``bench/bench_rnf.py`` (the same code writes the committed
numbers in ``bench/results/rnf-*.json``) and asserts the acceptance threshold on the
measured values. Run with ``pytest -m slow tests/engines/test_rnf_acceptance.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_rnf.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_rnf", _BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_residual_beats_ab_initio(bench):
    r = bench.residual_vs_nonresidual()
    print(r)
    assert r["probe_phase_wraps"] > 2  # "several phase wraps" across the probe
    assert r["residual"]["complex_error"] < 0.1
    assert r["non_residual"]["complex_error"] >= 2 * r["residual"]["complex_error"]


def test_sparse_data_beats_pie(bench):
    r = bench.sparse_data()
    print(r)
    for key in ("keep_50", "keep_25"):
        row = r[key]
        for pie in ("epie", "rpie"):
            # PIE's error at its best grid point; its best FRC anywhere on its grid
            assert row["rnf"]["complex_error"] < row[pie]["complex_error"], (key, pie)
            assert row["rnf"]["frc_resolution"] > row[pie]["best_frc"], (key, pie)
            assert row[pie]["best_frc"] >= row[pie]["frc_resolution"]


def test_position_correction(bench):
    r = bench.position_correction()
    print(r)
    assert r["rms_reduction"] >= 3
    assert r["learned"]["complex_error"] < r["fixed"]["complex_error"]


def test_nearfield_distance_and_wavelength(bench):
    r = bench.nearfield_geometry()
    print(r)
    for case in ("optical_both_plus", "optical_opposite"):
        assert abs(r[case]["distance_error"]) < 0.005, case
        assert abs(r[case]["wavelength_error"]) < 0.005, case
    # paraxial regime: only the Fresnel product is identifiable (and is recovered)
    assert abs(r["xray_paraxial"]["product_error"]) < 0.005
    assert abs(r["xray_paraxial"]["start_distance_error"]) == pytest.approx(0.05, rel=1e-6)


def test_fourier_pupil_recovery(bench):
    r = bench.fourier_pupil()
    print(r)
    assert r["aberration_rms_rad"] > 0.5  # a real aberration to recover
    assert r["pupil_rms_error_rad"] < 0.05


@pytest.mark.realdata
def test_fpm_bloodsmear_sharper_than_centre_led(bench, data_dir):
    path = data_dir / "fpm-bloodsmear" / "bloodsmear_green.mat"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    r = bench.fourier_bloodsmear(path)
    print(r)
    assert r["frc_rnf"] > r["frc_centre_led"]
    # also when each FRC is limited to what its image can physically hold (RNF: the
    # synthetic-NA cutoff; centre LED: its own Nyquist, above which bicubic replicas agree)
    assert r["frc_rnf_capped"] > r["frc_centre_led_capped"]
    # and beyond the objective's own band: the dark-field LEDs were used consistently
    assert r["frc_rnf_capped"] > r["brightfield_cutoff_cyc_px"]


def test_coded_25_frames(bench):
    r = bench.coded_few_frames()
    print(r)
    assert r["n_frames"] == 25
    assert r["complex_error"] < 0.15


def test_raster_pathology(bench):
    r = bench.raster_pathology()
    print(r)
    assert r["ratio_epie_over_rnf"] >= 2


def test_activation_ablation_runs_every_activation(bench):
    # a benchmark (its table is in bench/results/rnf.md), not a threshold: check that
    # every activation trains and is scored, on a short run
    r = bench.activation_ablation(epochs=2, lrs=(1e-3,))
    assert set(r) == set(bench.ACTIVATIONS)
    for act, v in r.items():
        assert 0 < v["complex_error"] < 1, act
        assert v["final_loss"] > 0, act
