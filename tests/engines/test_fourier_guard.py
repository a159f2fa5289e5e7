"""Fourier-ptychography tiles leave a guard band of camera pixels free, the camera field's
own edge included: the engines model each tile's object as periodic, which a camera crop
is not (``ptytasks.tiling.Tile.guard``). Small and fast."""

from __future__ import annotations

import numpy as np
import pytest

from ptytasks.calibration import tile_weight
from ptytasks.engines.registry import run_engine
from ptytasks.engines.result import ReconstructionResult
from ptytasks.evaluation import trusted_mask
from ptytasks.modalities import modality_of
from ptytasks.simulate import simulate
from ptytasks.tiling import Tile, guard_mask, tile_dataset


@pytest.fixture(scope="module")
def fp():
    return simulate("fourier", image_size=32, seed=0)


def test_fourier_tiles_guard_the_camera_fields_edge_too(fp):
    mod = modality_of(fp)
    one = mod.plan_tiles(fp, (1, 1))
    assert len(one) == 1 and one[0].guard == mod.tile_margin // 2  # one tile guarded too
    assert all(t.guard == 2 for t in mod.plan_tiles(fp, (2, 2), margin=4))
    assert mod.plan_tiles(fp, (1, 1), guard=0)[0].guard == 0
    assert Tile.from_dict(one[0].to_dict()).to_dict() == one[0].to_dict()
    sub = tile_dataset(fp, one[0])
    g = one[0].guard
    m = sub.meta["tile_mask"]
    assert m.shape == sub.frame_shape and not m[:g].any() and m[g:-g, g:-g].all()
    res = ReconstructionResult(object=np.ones(sub.object_shape, np.complex64))
    w = tile_weight(sub, res)
    up = sub.object_shape[0] // sub.frame_shape[0]
    inner = (slice(2 * g * up, -2 * g * up),) * 2  # beyond the band and its taper
    assert w.shape == sub.object_shape
    # the band keeps a sliver of weight (the mosaic keeps its values) but is not trusted
    assert 0 < w[: g * up].max() < 0.1 and w[inner].min() == 1
    t = trusted_mask(w)
    assert not t[: g * up].any() and not t[:, -g * up :].any() and t[inner].all()


@pytest.mark.parametrize("engine", ["rnf", "rpie"])
def test_guard_band_pixels_do_not_matter(fp, engine):
    """The guard band's measurements are left out of the data term: shuffling them within
    each image (every per-image statistic unchanged) leaves the reconstruction as it was."""
    mask = guard_mask(fp.frame_shape, 3)
    rng = np.random.default_rng(0)
    shuffled = np.array(fp.frames, np.float32, copy=True)
    band = ~mask
    for f in shuffled:
        f[band] = rng.permutation(f[band])
    results = []
    prior = np.ones(fp.object_shape, np.complex64)
    # float64: the per-image means (the learned background's units) then agree to the
    # last bit whatever the order of the pixels
    kw = {"epochs": 2, "seed": 3, **({"dtype": "float64"} if engine == "rnf" else {})}
    for frames in (np.asarray(fp.frames, np.float32), shuffled):
        d = fp.subset(np.arange(fp.n_frames))
        d.frames = frames
        d.meta = {**d.meta, "tile_mask": mask}
        results.append(run_engine(engine, d, kw, object_prior=prior))
    a, b = (np.asarray(r.object) for r in results)
    assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max()
    # ... while the same shuffle without the mask changes it
    d = fp.subset(np.arange(fp.n_frames))
    d.frames = shuffled
    c = np.asarray(run_engine(engine, d, kw, object_prior=prior).object)
    d.frames = np.asarray(fp.frames, np.float32)
    ref = np.asarray(run_engine(engine, d, kw, object_prior=prior).object)
    assert np.abs(c - ref).max() > 1e-3 * np.abs(ref).max()
