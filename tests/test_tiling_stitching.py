"""Tiling covers every frame and pixel; stitching undoes per-tile scale, phase and ramps."""

import numpy as np
import pytest

from ptytasks.stitching import feather, mosaic_shape, solve_corrections, stitch_region
from ptytasks.subsample import decimate_raster, keep_fraction, to_overlap
from ptytasks.tiling import Tile, plan_fullframe_tiles, plan_scanning_tiles


def _raster(n=12, step=8.0, jitter=0.0, seed=0):
    y, x = np.meshgrid(np.arange(n) * step, np.arange(n) * step, indexing="ij")
    p = np.c_[y.ravel(), x.ravel()] + 4
    return p + np.random.default_rng(seed).normal(0, jitter, p.shape)


def test_subsample_methods():
    p = _raster(jitter=0.7)
    assert len(decimate_raster(p, 2)) == 36
    k = keep_fraction(len(p), 0.25, seed=1)
    assert len(k) == 36 and len(np.unique(k)) == 36
    kept = to_overlap(p, probe_diameter=20, target_overlap=0.3)
    d = np.linalg.norm(p[kept][:, None] - p[kept][None], axis=-1) + np.eye(len(kept)) * 1e9
    assert d.min() >= 20 * 0.7 - 1e-9


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 2)])
def test_scanning_tiles_cover_all(grid):
    p = _raster()
    tiles = plan_scanning_tiles(p, (16, 16), grid, margin_probe_widths=0.5)
    used = np.unique(np.concatenate([t.frame_indices for t in tiles]))
    assert np.array_equal(used, np.arange(len(p)))
    # cores partition the scanned canvas
    shape = mosaic_shape(tiles)
    owner = np.zeros(shape, int)
    for t in tiles:
        y0, y1, x0, x1 = t.core
        owner[y0:y1, x0:x1] += 1
    lo = np.floor(p.min(0)).astype(int)
    hi = np.ceil(p.max(0)).astype(int) + 16
    assert (owner[lo[0] : hi[0], lo[1] : hi[1]] == 1).all()
    for t in tiles:  # every window fits on its canvas
        local = p[t.frame_indices] - np.array(t.object_origin)
        assert local.min() >= 0
        assert (local.max(0) + 16 <= np.array(t.object_shape)).all()


def test_stitching_removes_scale_phase_and_ramp():
    rng = np.random.default_rng(3)
    p = _raster()
    tiles = plan_scanning_tiles(p, (16, 16), (2, 3), margin_probe_widths=1.0)
    shape = mosaic_shape(tiles)
    truth = np.exp(1j * rng.uniform(-1, 1, shape)) * rng.uniform(0.5, 1, shape)
    store, distort = {}, {}
    for t in tiles:
        y0, x0 = t.object_origin
        h, w = t.object_shape
        yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
        g = rng.uniform(0.5, 2) * np.exp(1j * rng.uniform(-3, 3))
        ky, kx = rng.uniform(-0.05, 0.05, 2)
        ramp = np.exp(1j * (ky * yy + kx * xx))
        distort[t.tile_id] = (g, ky, kx)
        store[t.tile_id] = (truth[y0 : y0 + h, x0 : x0 + w] * g * ramp, np.ones((h, w)))
    corr = solve_corrections(tiles, store.__getitem__)
    full = (0, shape[0], 0, shape[1])
    mosaic, weight = stitch_region(full, tiles, store.__getitem__, corr)
    seen = weight > 0
    # What remains is the reference tile's (tile 0 is the gauge) distortion, everywhere.
    g, ky, kx = distort[tiles[0].tile_id]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    expected = truth * g * np.exp(1j * (ky * yy + kx * xx))
    err = np.abs(mosaic[seen] - expected[seen]) / np.abs(expected[seen])
    assert err.max() < 1e-4
    # Region-wise stitching equals the whole.
    half = (0, shape[0] // 2, 0, shape[1])
    part, _ = stitch_region(half, tiles, store.__getitem__, corr)
    assert np.allclose(part, mosaic[: shape[0] // 2])


def test_feather_is_the_blend_taper():
    """The one blend taper: 1 on the core, linear ``1 - d / (m + 1)`` outside it (``d``
    pixels from the core, ``m`` the widest margin), floored at ``eps``, separable."""
    t = Tile("t", (0, 0), np.arange(0), (10, 20), (6, 8), (12, 14, 22, 26))
    fy = np.array([1, 2, 3, 3, 2, 1]) / 3  # margins 2 | 2: m = 2
    fx = np.array([1, 2, 3, 3, 3, 3, 2, 1]) / 3
    np.testing.assert_allclose(feather(t), fy[:, None] * fx[None, :], rtol=1e-12)
    np.testing.assert_allclose(feather(t, eps=0.5), np.maximum(fy, 0.5)[:, None]
                               * np.maximum(fx, 0.5)[None, :], rtol=1e-12)  # fmt: skip
    whole = Tile("u", (0, 0), np.arange(0), (3, 4), (5, 6), (3, 8, 4, 10))
    np.testing.assert_array_equal(feather(whole), 1)  # core = canvas: a plain average


def test_fullframe_tiles_coded_geometry():
    pos = np.array([[0.0, 0.0], [3.0, 5.0], [7.0, 2.0]])
    tiles = plan_fullframe_tiles((64, 64), (2, 2), margin_px=8, positions=pos)
    assert len(tiles) == 4
    for t in tiles:
        y0, y1, x0, x1 = t.frame_crop
        # the tile canvas holds the crop's view for every translation
        local = pos + np.array([y0, x0]) - np.array(t.object_origin)
        assert local.min() >= 0
        assert (local.max(0) + np.array([y1 - y0, x1 - x0]) <= np.array(t.object_shape)).all()


@pytest.mark.parametrize("jitter", [0.0, 2.5])  # a full raster (checkerboard), irregular
def test_halves_are_split_over_the_whole_scan_not_per_tile(jitter):
    """Half-data FRC of a tiled run: each frame is in one half in every tile that holds
    it, so the two half mosaics share no frame (and no frame's noise) where tiles blend.
    Split inside each tile, a frame shared by overlapping tiles fell in both halves."""
    from ptytasks.data import PtychoData
    from ptytasks.modalities import modality_of
    from ptytasks.tiling import tile_half

    p = _raster(jitter=jitter, seed=3)
    n = len(p)
    frames = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 16, 16))
    hi = np.ceil(p.max(0)).astype(int) + 16
    data = PtychoData("farfield", frames.copy(), 1e-10, 1e-8, (int(hi[0]), int(hi[1])),
                      positions_px=p)
    tiles = plan_scanning_tiles(p, (16, 16), (2, 2), margin_probe_widths=0.5)
    assert sum(len(t.frame_indices) for t in tiles) > 1.3 * n  # tiles share frames
    used = {}
    split = modality_of(data).half_split(data)
    for half in "ab":
        ids = [tile_half(data, t, half, split).frames[:, 0, 0].astype(int) for t in tiles]
        assert all(len(i) > 0.4 * len(t.frame_indices) for i, t in zip(ids, tiles, strict=True))
        used[half] = set(np.concatenate(ids).tolist())
    assert not used["a"] & used["b"]
    assert used["a"] | used["b"] == set(range(n))
    with pytest.raises(ValueError, match="half"):
        tile_half(data, tiles[0], "c", split)


def test_tile_scales_are_not_shrunk_by_noise():
    """Independent noise in the tiles leaves every tile's |scale| at 1. A one-sided
    least-squares ratio shrank it by 1 / (1 + sigma^2 / |O|^2) per seam, compounding away
    from the reference tile (0.73 on the fourth of a 1 x 4 grid at sigma 0.3)."""
    from ptytasks.stitching import mosaic_shape, solve_corrections

    rng = np.random.default_rng(2)
    tiles = plan_scanning_tiles(_raster(16, 6.0), (16, 16), (1, 4), margin_probe_widths=1.0)
    truth = np.exp(1j * rng.uniform(-1, 1, mosaic_shape(tiles))) * rng.uniform(
        0.5, 1, mosaic_shape(tiles))
    store = {}
    for t in tiles:
        (y0, x0), (h, w) = t.object_origin, t.object_shape
        noise = 0.3 * (rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))) / np.sqrt(2)
        store[t.tile_id] = ((truth[y0:y0 + h, x0:x0 + w] + noise).astype(np.complex64),
                            np.ones((h, w), np.float32))
    cor = solve_corrections(tiles, store.__getitem__, ramps=False)
    assert all(abs(abs(cor[t.tile_id].scale) - 1) < 0.02 for t in tiles), [
        abs(cor[t.tile_id].scale) for t in tiles]


def test_a_fourier_guard_band_does_not_steer_the_tile_scale():
    """Guard pixels (weight 1e-3 of the tile's) hold whatever the periodic model wrapped
    there; they must not enter the overlap fit (sqrt(w_i w_j) let them in at ~0.03)."""
    from ptytasks.calibration import _guard_taper
    from ptytasks.stitching import solve_corrections
    from ptytasks.tiling import Tile, guard_mask, plan_fullframe_tiles

    rng = np.random.default_rng(0)
    u, guard = 4, 4
    tiles = [Tile.from_dict({**t.to_dict(), "guard": guard})
             for t in plan_fullframe_tiles((64, 64), (1, 2), margin_px=8, upsample=u)]
    truth = np.exp(1j * rng.uniform(-1, 1, (256, 256))) * rng.uniform(0.5, 1, (256, 256))
    store = {}
    for t in tiles:
        (y0, x0), (h, w) = t.object_origin, t.object_shape
        c = t.frame_crop
        wt = np.maximum(np.kron(_guard_taper(guard_mask((c[1] - c[0], c[3] - c[2]), guard)),
                                np.ones((u, u))), 1e-3).astype(np.float32)  # fmt: skip
        junk = 1.5 * np.exp(1j * rng.uniform(-np.pi, np.pi, (h, w)))
        store[t.tile_id] = (np.where(wt <= 1e-3, junk, truth[y0:y0 + h, x0:x0 + w]), wt)
    scale = solve_corrections(tiles, store.__getitem__)[tiles[1].tile_id].scale
    assert abs(scale - 1) < 1e-3


def test_the_trusted_region_does_not_depend_on_the_tile_grid():
    """The mosaic weight is the feather-weighted mean illumination, so the trusted mask (a
    fraction of its peak) is the same for one tile or a grid (the summed weight counted the
    frames shared where cores meet once per tile: 13 % fewer trusted pixels at 2 x 2)."""
    import torch

    from ptytasks.evaluation import trusted_mask
    from ptytasks.physics.shifts import insert_patches
    from ptytasks.stitching import mosaic_shape, stitch_region

    pos = _raster(16, 6.0)
    n = 24
    yy, xx = np.mgrid[:n, :n]
    probe = np.exp(-((yy - n // 2) ** 2 + (xx - n // 2) ** 2) / (2 * 5.0**2))
    counts = []
    for grid in ((1, 1), (2, 2), (3, 3)):
        tiles = plan_scanning_tiles(pos, (n, n), grid, margin_probe_widths=0.5)
        store = {}
        for t in tiles:
            (y0, x0), (h, w) = t.object_origin, t.object_shape
            loc = torch.as_tensor(pos[t.frame_indices] - np.array([y0, x0]))
            wg = insert_patches(torch.as_tensor(probe).expand(len(loc), n, n).clone(), loc,
                                (h, w), subpixel=False).numpy()  # fmt: skip
            store[t.tile_id] = (np.ones((h, w), np.complex64), wg.astype(np.float32))
        sh = mosaic_shape(tiles)
        _, wt = stitch_region((0, sh[0], 0, sh[1]), tiles, store.__getitem__)
        counts.append(int(trusted_mask(wt).sum()))
    assert max(counts) - min(counts) <= 0.01 * max(counts), counts


def test_corrections_keep_a_band_of_tiles_in_memory_not_the_whole_plan():
    """A gigapixel plan holds hundreds of tiles; aligning them must not hold them all at
    once. The loader's arrays are tracked by weak references: a 6 x 6 plan may keep at
    most ``2 (row + 1) + 2`` tiles alive and reads each tile once per pass (two passes);
    the corrections still undo every tile's gain."""
    import weakref

    rng = np.random.default_rng(5)
    p = _raster(n=24)
    tiles = plan_scanning_tiles(p, (16, 16), (6, 6), margin_probe_widths=0.5)
    shape = mosaic_shape(tiles)
    truth = np.exp(1j * rng.uniform(-1, 1, shape)) * rng.uniform(0.5, 1, shape)
    gains = {t.tile_id: rng.uniform(0.5, 2) * np.exp(1j * rng.uniform(-3, 3)) for t in tiles}
    live, reads = [], []

    def load(tile_id):
        t = next(t for t in tiles if t.tile_id == tile_id)
        y0, x0 = t.object_origin
        h, w = t.object_shape
        obj = truth[y0 : y0 + h, x0 : x0 + w] * gains[tile_id]
        weight = np.ones((h, w)) + rng.uniform(0, 0.1, (h, w))
        live.extend(weakref.ref(a) for a in (obj, weight))
        reads.append(tile_id)
        alive = sum(r() is not None for r in live) // 2
        peak[0] = max(peak[0], alive)
        return obj, weight

    peak = [0]
    corr = solve_corrections(tiles, load)
    assert len(tiles) == 36
    assert peak[0] <= 2 * (6 + 1) + 2 + 1, peak  # + 1: the tile being read
    assert len(reads) <= 2 * len(tiles), len(reads)
    for t in tiles:  # the ratio between tiles is their gains' ratio, whatever the loads
        rel = corr[t.tile_id].scale * gains[t.tile_id] / (corr[tiles[0].tile_id].scale
                                                          * gains[tiles[0].tile_id])
        assert abs(rel - 1) < 1e-6, (t.tile_id, rel)
