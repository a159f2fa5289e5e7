"""Acceptance of issue #9 (learned single-shot inversion) on held-out simulated data.

Each test runs the same function as ``bench/bench_learned.py`` (committed results:
``bench/results/learned-layout-vm.*`` for the papers' regime, the ``layout`` weights, and
``learned-vm.*`` for the ``default`` weights) and asserts the issue's threshold. Slow:
minutes on 2 CPU cores.
"""

from __future__ import annotations

import pytest

from bench import bench_learned as B

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_ppn_beats_ptychonn_on_held_out_layouts():
    res = B.part_compare(preset="layout")
    ppn, cnn = res["patches"]["ppn"], res["patches"]["ptychonn"]
    diff = res["paired_difference"]
    for key in B.KEYS:
        assert ppn[key] > cnn[key], (key, ppn, cnn)
        assert diff[key]["ci95"][0] > 0, (key, diff[key])  # not a draw of the test set
        assert res["field"]["ppn"][key] > res["field"]["ptychonn"][key], (key, res["field"])


def test_ppn_phase_ssim_beats_epie_at_low_overlap():
    """Not met, and it fails (it was marked xfail until fa61dc1; the guide allows no xfail
    to keep a suite green): in the papers' regime (probe filling 0.9 of the window,
    held-out IC layouts) ePIE from the true probe keeps phase SSIM 0.57 at 30 % overlap
    (0.70 with the probe fixed) while its amplitude collapses (SSIM 0.085 vs PPN's 0.83);
    PPN's phase SSIM is 0.81; +0.36 scored as the papers score
    (bench/results/learned-layout-vm.md, docs/learned.md)."""
    res = B.part_overlap(preset="layout")
    low = res["0.30"]
    assert low["ppn"]["phase_ssim"] >= low["epie"]["phase_ssim"] + 0.5, low
    assert {"ppn", "epie"} <= set(res["0.75"])


def test_papers_scoring_reproduces_their_low_overlap_gap_at_low_dose():
    # what docs/learned.md reports: min-max normalised, unwrapped phase (the papers' way)
    # puts ePIE near their 0.12 at 30 % overlap and 1e4 photons, PPN 0.5 and more above it
    row = B._overlap_row(0.3, 64, "layout", 1e4, 100)
    ppn, epie = row["ppn"]["phase_ssim_papers"], row["epie"]["phase_ssim_papers"]
    assert epie < 0.25 and ppn >= epie + 0.5, (ppn, epie)
    assert row["ppn"]["phase_ssim"] < row["epie"]["phase_ssim"] + 0.5  # ptyflow's: no such gap


def test_inference_100x_faster_than_100_epochs_of_epie():
    """Borderline on the shared 2-core VM with the default weights: 88-138x over nine runs
    (median 104x) on 2026-11-30, 145-172x over three on 2026-12-02 (docs/learned.md);
    passed at fa61dc1. Marked xfail until then; now it fails when a run misses 100x."""
    res = B.part_speed()  # default weights, both at every core
    assert res["n_positions"] >= 1000
    assert res["speedup"] >= 100, res


def test_learned_prior_halves_rnf_epochs():
    res = B.part_prior(preset="layout")  # 30, 50 and 75 % overlap
    for ov in ("0.30", "0.50", "0.75"):
        r = res[ov]
        assert r["epoch_ratio"] is not None and r["epoch_ratio"] >= 2, (ov, r)
