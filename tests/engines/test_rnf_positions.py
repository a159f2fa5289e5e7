"""RNF's scan-position models beyond per-frame correction.

``learn_positions="affine"``: a scan-scale error is learned as one map of the whole scan,
found again exactly, and resumed exactly from a checkpoint. Simulated far field (40 px
frames, 36 positions, dose 1e6, true probe as the start) whose nominal positions are 3 %
larger than the true ones: the map to find is 1 / 1.03 = 0.971.

``learn_positions="local"``: each frame's own correction without the scan's affine part
(the same scan plus 1 px random errors).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_positions import affine_rms
from ptytasks.engines.registry import run_engine
from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.simulate.datasets import simulate
from tests.engines.helpers import Killed, kill_after

SCALE = 0.03
BASE = {"epochs": 30, "hidden_features": 16, "seed": 0}


@pytest.fixture(scope="module")
def scaled():
    return simulate("farfield", frame_size=40, n_positions=36, overlap=0.75, dose=1e6,
                    position_scale_error=SCALE, seed=3)


def _rms(d, p):
    """RMS distance (px) of positions ``p`` from the truth, common shift removed."""
    e = np.asarray(p) - d.ground_truth["positions_px"]
    return float(np.sqrt(((e - e.mean(0)) ** 2).sum(1).mean()))


def test_affine_map_finds_the_scan_scale(scaled):
    d = scaled
    start = _rms(d, d.positions_px)
    r = reconstruct_rnf(d, RNFOptions(**BASE, learn_positions="affine"),
                        probe_prior=d.ground_truth["probe"])
    a = r.extras["position_affine"]
    # nominal = true * 1.03 about the centre, so the map back is 1 / 1.03 on both axes.
    # Bounds from the run-to-run spread: engine seeds 1-3 at one and two torch threads (the
    # thread count changes float reductions like a seed) put each axis within 0.0045 of
    # 0.971, their mean within 0.004, the off-diagonal terms within 0.010; a map that learns
    # nothing stays at 1 (0.029 off) and 0.
    np.testing.assert_allclose(np.diag(a), 1 / (1 + SCALE), atol=0.006)
    assert abs(np.diag(a).mean() - 1 / (1 + SCALE)) < 0.0045, np.diag(a)
    assert abs(a[0, 1]) < 0.012 and abs(a[1, 0]) < 0.012  # no spurious shear or rotation
    assert _rms(d, r.positions_px) < 0.2 * start, (start, _rms(d, r.positions_px))


def test_affine_map_resumes_exactly(scaled, tmp_path):
    opts = RNFOptions(**{**BASE, "epochs": 3}, learn_positions="affine")
    full = reconstruct_rnf(scaled, opts)
    ck = tmp_path / "run.ckpt"

    with pytest.raises(Killed):
        reconstruct_rnf(scaled, opts, checkpoint=ck, callback=kill_after(2))
    res = reconstruct_rnf(scaled, opts, checkpoint=ck)
    np.testing.assert_allclose(res.extras["position_affine"], full.extras["position_affine"],
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(res.positions_px, full.positions_px, rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.object, full.object, rtol=0, atol=1e-5)


def test_affine_map_blocks_cuda_graphs():
    """Its write-back to the model's positions reads the host each step."""
    import types

    import torch

    from ptytasks.engines.rnf_step import graph_blocker

    st = types.SimpleNamespace(device=torch.device("cuda"), learned=[], affine=None,
                               obj_field=types.SimpleNamespace(annealed=None))
    assert graph_blocker(st, RNFOptions()) is None
    st.affine = torch.zeros(2, 2)
    assert "position_affine" in graph_blocker(st, RNFOptions())


def test_affine_map_needs_scanning_data_and_a_known_value():
    # the allowed values as a settings file spells them (true, not Python's True)
    with pytest.raises(ValueError, match="learn_positions must be one of true, false, 'affine'"):
        RNFOptions(learn_positions="per-frame")
    fp = simulate("fourier", seed=0)
    with pytest.raises(ValueError, match="'affine' needs scanning data"):
        reconstruct_rnf(fp, RNFOptions(epochs=1, learn_positions="affine"))
    ff = simulate("farfield", frame_size=24, n_positions=9, seed=0)
    for engine in ("epie", "rpie", "pine"):  # the PIE engines correct each frame, no map
        with pytest.raises(ValueError, match="not a position model of engine"):
            run_engine(engine, ff, {"epochs": 1, "learn_positions": "affine"})


# --------------------------------------------------------------- learn_positions="local"


def test_affine_part_is_the_least_squares_scan_map():
    import torch

    from ptytasks.engines.rnf import affine_part

    rng = np.random.default_rng(0)
    p0 = torch.as_tensor(rng.uniform(0, 100, (50, 2)))
    lin = torch.tensor([[0.02, -0.01], [0.005, -0.03]], dtype=torch.float64)
    own = torch.as_tensor(rng.normal(0, 1, (50, 2)))
    own = own - affine_part(own, p0)  # a frame-own part with no affine component
    delta = (p0 - p0.mean(0)) @ lin.T + torch.tensor([0.7, -0.4], dtype=torch.float64) + own
    torch.testing.assert_close(delta - affine_part(delta, p0), own)


def test_local_positions_learn_frame_errors_not_the_scan_map():
    """Nominal scan 3 % too large plus 1 px random errors: ``"local"`` removes most of each
    frame's own error and leaves the scan's affine part where the file put it."""
    d = simulate("farfield", frame_size=40, n_positions=36, overlap=0.75, dose=1e6,
                 position_scale_error=SCALE, position_error_px=1.0, seed=3)
    true = d.ground_truth["positions_px"]
    start = affine_rms(d.positions_px, true)
    r = reconstruct_rnf(d, RNFOptions(**BASE, learn_positions="local"),
                        probe_prior=d.ground_truth["probe"])
    import torch

    from ptytasks.engines.rnf import affine_part

    found = np.asarray(r.positions_px, float)
    delta = found - np.asarray(d.positions_px, float)
    scan_map = affine_part(torch.as_tensor(delta),
                           torch.as_tensor(d.positions_px, dtype=torch.float64))
    assert scan_map.abs().max() < 0.01, scan_map  # no shift, scale, shear or rotation learned
    assert np.abs(delta).max() > 0.3  # frames did move
    assert affine_rms(found, true) < 0.5 * start, (start, affine_rms(found, true))


def test_local_positions_need_scanning_data():
    fp = simulate("fourier", seed=0)
    with pytest.raises(ValueError, match="'local' needs scanning data"):
        reconstruct_rnf(fp, RNFOptions(epochs=1, learn_positions="local"))
