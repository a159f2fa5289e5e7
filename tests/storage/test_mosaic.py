"""Mosaic assembly: alignment rules, lossless blending, 2 Dask worker processes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ptytasks.stitching import feather
from ptytasks.tiling import Tile
from storage.errors import DataError
from storage.mosaic import MosaicWriter, TileLoader
from storage.store import RunStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiles(store: RunStore, covered, tile, step, rng):
    """Overlapping tiles covering ``covered`` (pixels); random content and weights, cores
    inset by 8 pixels, so the feather taper is not uniform."""
    tiles, steps = [], {}
    num, den, fsum = np.zeros(covered, complex), np.zeros(covered), np.zeros(covered)
    for y0 in range(0, covered[0] - tile[0] + 1, step[0]):
        for x0 in range(0, covered[1] - tile[1] + 1, step[1]):
            t = Tile(f"t{len(tiles):03d}", (0, 0), np.arange(0), (y0, x0), tile,
                     (y0 + 8, y0 + tile[0] - 8, x0 + 8, x0 + tile[1] - 8))  # fmt: skip
            obj = (rng.normal(size=tile) + 1j * rng.normal(size=tile)).astype(np.complex64)
            w = rng.uniform(0.5, 1.5, size=tile).astype(np.float32)
            steps[t.tile_id] = f"reconstruct/{t.tile_id}"
            store.write_group(steps[t.tile_id], {"object": obj, "weight": w}, t.tile_id,
                              dims={"object": ("y", "x"), "weight": ("y", "x")})  # fmt: skip
            # The blend weight of the pipeline: illumination x the one feather taper.
            f = w * feather(t)
            num[y0 : y0 + tile[0], x0 : x0 + tile[1]] += f * obj
            den[y0 : y0 + tile[0], x0 : x0 + tile[1]] += f
            fsum[y0 : y0 + tile[0], x0 : x0 + tile[1]] += feather(t)
            tiles.append(t)
    # the blend, and the mosaic's weight: the feather-weighted mean illumination of the
    # tiles seeing a pixel
    return tiles, TileLoader(store.path, steps), num / den, den / fsum


def _check(store_path, blend, weight, fill=1.0):
    w = MosaicWriter(store_path)
    got_w, got_o = w.array("weight")[...], w.array("object")[...]
    h, wd = weight.shape
    np.testing.assert_allclose(got_w[:h, :wd], weight, rtol=1e-6)  # every contribution arrived
    np.testing.assert_allclose(got_o[:h, :wd], blend, rtol=1e-4, atol=1e-5)
    # Pixels (and whole shards) no tile reaches: weight 0, object ``fill``.
    assert (got_w[h:] == 0).all() and (got_o[h:] == fill).all() and got_w.shape[0] > h + 32


def test_region_alignment(tmp_path):
    store = RunStore.create(tmp_path / "m.zarr")
    w = MosaicWriter.create(store, (100, 70), pixel_size=1e-8, shard=(32, 32), chunk=(16, 16))
    w.write_region(32, 32, np.ones((32, 32)))
    w.write_region(96, 64, np.ones((4, 6)))  # edge shard, clipped
    for y0, x0, shp in ((16, 0, (32, 32)), (0, 0, (20, 32)), (0, 0, (200, 32))):
        with pytest.raises(DataError, match=r"whole shards.*use stitch\(\)"):
            w.write_region(y0, x0, np.ones(shp))
    assert w.array()[40, 40] == 1 and w.array()[10, 10] == 0


def test_serial_stitch_and_pyramid(tmp_path):
    rng = np.random.default_rng(1)
    store = RunStore.create(tmp_path / "m.zarr")
    tiles, load, blend, weight = _tiles(store, (90, 110), (40, 50), (25, 30), rng)
    w = MosaicWriter.create(store, (130, 110), pixel_size=1e-8, shard=(32, 32), chunk=(16, 16))
    w.stitch(tiles, load)
    assert w.build_pyramid(2) == 2
    _check(store.path, blend, weight)
    lvl1 = w.array("object", 1)[...]
    assert lvl1.shape == (65, 55)
    want = (blend[:2, :2] * weight[:2, :2]).sum() / weight[:2, :2].sum()
    np.testing.assert_allclose(lvl1[0, 0], want, rtol=1e-4)
    tree = store.open_datatree()
    assert tree["mosaic/level_2"].object.dims == ("y", "x")
    assert tree["mosaic/level_0"].x.attrs["units"] == "m"


def test_two_dask_processes(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    # worker processes must import storage/ptytasks from this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    rng = np.random.default_rng(2)
    store = RunStore.create(tmp_path / "m.zarr")
    tiles, load, blend, weight = _tiles(store, (160, 192), (64, 64), (48, 32), rng)  # overlaps
    w = MosaicWriter.create(store, (224, 192), pixel_size=1e-8, shard=(32, 32), chunk=(16, 16))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:  # fmt: skip
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        w.stitch(tiles, load, fill=0.5, client=client)
        w.build_pyramid(1, client=client)
    _check(store.path, blend, weight, fill=0.5)


def _one_tile(path, origin, tile_shape, mosaic_shape, shard, chunk, value=0.5 + 0j):
    """A mosaic stitched from one uniform tile of weight 1 (fill 1 where it is not)."""
    y0, x0 = origin
    t = Tile("t0000", (0, 0), np.arange(0), origin, tile_shape,
             (y0, y0 + tile_shape[0], x0, x0 + tile_shape[1]))  # fmt: skip
    obj = np.full(tile_shape, value, np.complex64)
    w = np.ones(tile_shape, np.float32)
    mw = MosaicWriter.create(path, mosaic_shape, pixel_size=1e-8, shard=shard, chunk=chunk)
    mw.stitch([t], lambda tid: (obj, w), None, fill=1.0)
    return mw


def test_unseen_pixels_read_the_fill_at_every_level(tmp_path):
    """Free space (fill 1) where no tile reaches, at level 0 and in the pyramid alike (the
    coarse levels read 0 there, so a viewer's background flipped as it zoomed out)."""
    mw = _one_tile(tmp_path / "s.zarr", (4, 4), (20, 20), (40, 40), (16, 16), (8, 8))
    mw.build_pyramid(levels=2)
    for k in range(3):
        assert mw.array("object", k)[-1, -1] == 1.0, k
        assert mw.array("weight", k)[-1, -1] == 0.0, k


def test_pyramid_keeps_odd_edges_and_reaches_the_evaluation_bound(tmp_path):
    """A block half outside an odd edge keeps its pixels' mean weight (den / 4 halved it at
    every level, until the edge left the trusted mask), and a strip-shaped mosaic gets the
    levels its metrics need to fit their memory bound (the short side alone gave none)."""
    mw = _one_tile(tmp_path / "s.zarr", (0, 0), (33, 33), (33, 33), (16, 16), (8, 8))
    mw.build_pyramid(levels=2)
    for k in (1, 2):
        wk = mw.array("weight", k)[...]
        np.testing.assert_allclose(wk, 1.0, err_msg=f"level {k}")
    strip = _one_tile(tmp_path / "t.zarr", (0, 0), (16, 600), (16, 600), (16, 64), (8, 32),
                      value=1.0)  # fmt: skip
    assert strip.build_pyramid(max_pixels=2000) == 2  # 9600 -> 2400 -> 600 pixels


def test_picklable_store_handles_carry_absolute_paths(tmp_path, monkeypatch):
    """What travels to a Dask worker (another working directory, e.g. a remote
    scheduler's) names the store absolutely."""
    monkeypatch.chdir(tmp_path)
    for handle in (MosaicWriter("run.zarr"), TileLoader("run.zarr", {})):
        assert handle.path == str(tmp_path / "run.zarr")


def test_a_truth_reduced_for_the_metrics_lies_on_the_pyramid(tmp_path):
    """The metrics reduce a truth by 2**k as the pyramid reduces the mosaic, odd edges
    included (7 -> 4 -> 2: an edge block of one real pixel keeps that pixel's weight)."""
    from ptytasks.evaluation import downsample_weighted

    rng = np.random.default_rng(0)
    obj = (rng.normal(size=(7, 7)) + 1j * rng.normal(size=(7, 7))).astype(np.complex64)
    weight = rng.uniform(0.1, 1.0, (7, 7)).astype(np.float32)
    store = RunStore.create(tmp_path / "m.zarr")
    w = MosaicWriter.create(store, (7, 7), pixel_size=1e-8, shard=(32, 32), chunk=(16, 16))
    w.write_region(0, 0, obj, weight, level=0)
    assert w.build_pyramid(2) == 2
    np.testing.assert_allclose(downsample_weighted(obj, weight, 4), w.array("object", 2)[...],
                               rtol=1e-5)

