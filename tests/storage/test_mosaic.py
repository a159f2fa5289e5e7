"""Mosaic assembly: alignment rules, lossless blending, 2 Dask worker processes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from storage.errors import DataError
from storage.mosaic import MosaicWriter, TileRef, assemble_mosaic, taper_window
from storage.store import RunStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiles(store: RunStore, shape, tile, step, rng):
    """Overlapping tiles covering ``shape``; each has random content and weights."""
    refs, truth_num, truth_den = [], np.zeros(shape, complex), np.zeros(shape)
    i = 0
    for y0 in range(0, shape[0] - tile[0] + 1, step[0]):
        for x0 in range(0, shape[1] - tile[1] + 1, step[1]):
            obj = (rng.normal(size=tile) + 1j * rng.normal(size=tile)).astype(np.complex64)
            w = rng.uniform(0.5, 1.5, size=tile).astype(np.float32)
            name = f"reconstruct/tile_{i:03d}"
            store.write_group(name, {"object": obj, "weight": w}, f"t{i}",
                              dims={"object": ("y", "x"), "weight": ("y", "x")})  # fmt: skip
            refs.append(TileRef(name, y0, x0))
            truth_num[y0 : y0 + tile[0], x0 : x0 + tile[1]] += w * obj
            truth_den[y0 : y0 + tile[0], x0 : x0 + tile[1]] += w
            i += 1
    return refs, truth_num, truth_den


def _check(store_path, num, den):
    w = MosaicWriter(store_path)
    got_w = w.array("weight")[...]
    got_o = w.array("object")[...]
    np.testing.assert_allclose(got_w, den, rtol=1e-6)  # every contribution arrived
    np.testing.assert_allclose(got_o, num / den, rtol=1e-4, atol=1e-5)


def test_region_alignment(tmp_path):
    store = RunStore.create(tmp_path / "m.zarr")
    w = MosaicWriter.create(store, (100, 70), pixel_size=1e-8, shard=(32, 32), chunk=(16, 16))
    w.write_region(32, 32, np.ones((32, 32)))
    w.write_region(96, 64, np.ones((4, 6)))  # edge shard, clipped
    for y0, x0, shp in ((16, 0, (32, 32)), (0, 0, (20, 32)), (0, 0, (200, 32))):
        with pytest.raises(DataError, match="whole shards"):
            w.write_region(y0, x0, np.ones(shp))
    assert w.array()[40, 40] == 1 and w.array()[10, 10] == 0


def test_serial_assembly_and_pyramid(tmp_path):
    rng = np.random.default_rng(1)
    store = RunStore.create(tmp_path / "m.zarr")
    shape = (90, 110)
    refs, num, den = _tiles(store, shape, (40, 50), (25, 30), rng)
    key = assemble_mosaic(store, refs, shape, pixel_size=1e-8, shard=(32, 32), chunk=(16, 16),
                          levels=2)  # fmt: skip
    _check(store.path, num, den)
    assert store.is_complete("mosaic")
    assert assemble_mosaic(store, refs, shape, pixel_size=1e-8, shard=(32, 32),
                           chunk=(16, 16), levels=2) == key  # fmt: skip
    lvl1 = MosaicWriter(store.path).array("object", 1)[...]
    assert lvl1.shape == (45, 55)
    want = (num[:2, :2]).sum() / den[:2, :2].sum()
    np.testing.assert_allclose(lvl1[0, 0], want, rtol=1e-4)
    tree = store.open_datatree()
    assert tree["mosaic/level_2"].object.dims == ("y", "x")
    assert tree["mosaic/level_0"].x.attrs["units"] == "m"
    # A changed tile invalidates the mosaic, not the other tiles
    store.write_group(refs[0].name, {"object": np.zeros((40, 50), np.complex64)}, "changed")
    assert not store.is_complete("mosaic")
    assert store.is_complete(refs[1].name)


def test_taper_window():
    w = taper_window((8, 10), 3)
    assert w.shape == (8, 10) and w.max() == 1 and 0 < w.min() < 0.1
    np.testing.assert_array_equal(taper_window((4, 4), 0), 1)


def test_two_dask_processes(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    # worker processes must import storage/ptytasks from this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    rng = np.random.default_rng(2)
    store = RunStore.create(tmp_path / "m.zarr")
    shape = (160, 192)
    refs, num, den = _tiles(store, shape, (64, 64), (48, 32), rng)  # many overlaps
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:  # fmt: skip
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        assemble_mosaic(store, refs, shape, pixel_size=1e-8, shard=(32, 32), chunk=(16, 16),
                        levels=1, client=client)  # fmt: skip
    _check(store.path, num, den)
    assert store.is_complete("mosaic")
