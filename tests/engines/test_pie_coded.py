"""ePIE/rPIE on coded ptychography (through the calibrated coded surface), detector masks,
and coded tiles with guard bands (small, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptytasks.engines.registry import run_engine
from ptytasks.metrics import complex_error
from ptytasks.modalities import modality_of
from ptytasks.simulate import simulate
from ptytasks.tiling import Tile, guard_mask, tile_dataset


@pytest.fixture(scope="module")
def coded():
    # The surface stands 300 um off the pixels (a cover glass): there the specimen's phase
    # shows in the intensity; 30 um leaves its slow variations nearly invisible.
    return simulate("coded", frame_size=32, n_positions=16, overlap=1 - 3 / 32,
                    surface_distance=300e-6, object_kind="blobs", seed=1)  # fmt: skip


def _prior(d):
    return np.full(d.frame_shape, np.sqrt(d.frames.mean()), np.complex64)


def _error(d, obj) -> float:
    m = np.zeros(d.object_shape, bool)
    m[12:-12, 12:-12] = True
    return complex_error(obj, d.ground_truth["object"], m)


def test_epie_reconstructs_coded_data_through_the_surface(coded):
    # Under a plane wave the rPIE and ePIE (alpha 1) updates coincide: the full step
    # overshoots on coded data, half a step (ePIE alpha 0.5) converges.
    d = coded
    r = run_engine("epie", d, {"epochs": 15, "learn_probe": False, "alpha": 0.5},
                   probe_prior=_prior(d), surface_prior=d.meta["surface"])  # fmt: skip
    start = _error(d, np.ones(d.object_shape, np.complex64))
    err = _error(d, r.object)
    assert err < 0.1 < start, (err, start)
    assert r.loss_history[-1] < 0.1 * r.loss_history[0]


def test_pie_takes_the_surface_prior_over_the_datasets(coded):
    d = coded
    kw = {"epochs": 4, "learn_probe": False, "alpha": 0.5}
    wrong = np.ones(d.frame_shape, np.complex64)
    a = run_engine("epie", d, kw, probe_prior=_prior(d), surface_prior=d.meta["surface"])
    b = run_engine("epie", d, kw, probe_prior=_prior(d), surface_prior=wrong)
    assert _error(d, b.object) > 2 * _error(d, a.object)


def test_masked_detector_pixels_do_not_matter(coded):
    d = coded
    mask = guard_mask(d.frame_shape, 4)
    bad = d.subset(np.arange(d.n_frames))
    bad.frames = np.where(mask, d.frames, 1e3 * d.frames.max()).astype(np.float32)
    results = []
    kw = {"probe_prior": _prior(d), "surface_prior": d.meta["surface"]}
    for data in (d, bad):
        data.meta["tile_mask"] = mask
        results.append(run_engine("rpie", data, {"epochs": 2, "learn_probe": False}, **kw))
    d.meta.pop("tile_mask")
    np.testing.assert_allclose(results[1].object, results[0].object, atol=1e-4)
    np.testing.assert_allclose(results[1].loss_history, results[0].loss_history, rtol=1e-4)


def test_coded_tiles_have_guard_bands_and_tapered_weights(coded):
    from ptytasks.calibration import tile_weight
    from ptytasks.engines.result import ReconstructionResult

    d = coded
    tiles = modality_of(d).plan_tiles(d, (2, 2), margin=8)
    assert all(t.guard == 4 for t in tiles)  # default: half the margin
    assert all(Tile.from_dict(t.to_dict()).to_dict() == t.to_dict() for t in tiles)
    one = modality_of(d).plan_tiles(d, (1, 1))[0]
    assert "guard" not in one.to_dict()  # one tile: nothing to guard
    assert modality_of(d).plan_tiles(d, (2, 2), margin=8, guard=2)[0].guard == 2
    sub = tile_dataset(d, tiles[0])
    m = sub.meta["tile_mask"]
    assert m.shape == sub.frame_shape and not m[:4].any() and m[4:-4, 4:-4].all()
    assert sub.meta["surface"].shape == sub.frame_shape
    res = ReconstructionResult(object=np.ones(sub.object_shape, np.complex64),
                               probe=np.ones(sub.frame_shape, np.complex64),
                               positions_px=sub.positions_px)  # fmt: skip
    w = tile_weight(sub, res)
    assert 0 < w.max() <= sub.n_frames
    assert w[0, 0] == 0 and w[:, 0].max() == 0  # the guard band of the first frame's window


def test_coded_transfer_functions_are_cached_and_exact():
    from ptytasks.physics.models.coded import Coded
    from ptytasks.physics.propagators import propagate

    s = torch.polar(torch.ones(32, 32), torch.randn(32, 32))
    m = Coded(torch.zeros(1, 2), (40, 40), (32, 32), wavelength=532e-9, distance=200e-6,
              surface_distance=300e-6, pixel_size=1.85e-6, surface=s)  # fmt: skip
    x = torch.randn(2, 32, 32, dtype=torch.complex64)
    with torch.no_grad():
        a = m.to_detector(x, None)
        assert len(m._tf_cache) == 2
        b = m.to_detector(x, None)
    ref = propagate(s * propagate(x, 1.85e-6, 532e-9, 200e-6), 1.85e-6, 532e-9, 300e-6)
    assert torch.equal(a, b) and torch.allclose(a, ref, atol=1e-6)
    m.distance.requires_grad_(True)
    y = m.to_detector(x, None)  # a learned distance keeps its gradient
    y.abs().sum().backward()
    assert m.distance.grad is not None


def test_coded_cached_propagation_reads_no_parameter_value_and_follows_changes(monkeypatch):
    """A cache hit reads no distance or wavelength from the device (a GPU read waits for the
    device and cannot run inside a CUDA graph); a distance changed in place is seen."""
    from ptytasks.physics.models.coded import Coded
    from ptytasks.physics.propagators import propagate

    m = Coded(torch.zeros(1, 2), (40, 40), (32, 32), wavelength=532e-9, distance=200e-6,
              surface_distance=300e-6, pixel_size=1.85e-6)  # fmt: skip
    x = torch.randn(2, 32, 32, dtype=torch.complex64)
    with torch.no_grad():
        a = m.from_detector(m.to_detector(x, None), None)
        with monkeypatch.context() as mp:
            mp.setattr(torch.Tensor, "__float__", lambda t: pytest.fail("read a value"))
            b = m.from_detector(m.to_detector(x, None), None)
        assert torch.equal(a, b) and torch.allclose(a, x, atol=1e-5)
        m.distance.copy_(torch.tensor(400e-6))  # e.g. a checkpoint's state loaded in place
        y = m.to_detector(x, None)
    ref = propagate(propagate(x, 1.85e-6, 532e-9, 400e-6), 1.85e-6, 532e-9, 300e-6)
    assert torch.allclose(y, ref, atol=1e-6)
