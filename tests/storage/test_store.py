"""RunStore: round trips, xarray, steps and fingerprints, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ptytasks.lazy_frames import LazyFrames
from storage.atomic import fingerprint
from storage.errors import DataError
from storage.store import RunStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("modality", ["farfield", "nearfield", "coded", "fourier"])
def test_raw_round_trip(tmp_path, modality, make, same):
    d = make(modality)
    d.meta["mask"] = np.ones(d.frame_shape, bool)
    d.meta["mask"][1, 2] = False
    store = RunStore.create(tmp_path / "r.zarr")
    store.write_raw(d)
    back = RunStore.open(tmp_path / "r.zarr").read_raw()
    same(d, back)
    assert back.meta["dose"] == 1e6
    np.testing.assert_array_equal(back.meta["mask"], d.meta["mask"])
    np.testing.assert_array_equal(back.meta["kept"], np.arange(d.n_frames))
    lazy = store.read_raw(lazy=True)
    np.testing.assert_array_equal(lazy.frames[3], d.frames[3])
    np.testing.assert_array_equal(np.asarray(lazy.frames), d.frames)


def test_datatree_dims_units_and_complex(tmp_path, make):
    d = make("farfield", n=40, frame=32)
    store = RunStore.create(tmp_path / "r.zarr")
    store.write_raw(d)
    store.write_subsample(np.arange(0, 40, 3), method="stride")
    store.write_group("priors", {"probe": d.probe, "pupil": np.ones((8, 8), complex)}, "p",
                      depends_on=["raw"])  # fmt: skip
    store.write_group("reconstruct/tile_000",
                      {"object": np.ones((20, 30), np.complex128), "loss": np.linspace(1, 0, 7),
                       "params": {"defocus": np.array(1e-6)}}, "t0", depends_on=["subsample"],
                      dims={"object": ("y", "x")}, attrs={"origin": [0, 0]})  # fmt: skip
    store.write_group("metrics", {"frc": np.linspace(1, 0, 5)}, "m", attrs={"rmse": 0.1})
    import warnings

    import xarray as xr

    with warnings.catch_warnings():  # plain xarray call; it may warn: no consolidated metadata
        warnings.simplefilter("ignore", RuntimeWarning)
        tree = xr.open_datatree(store.path, engine="zarr")
    raw = tree["raw"]
    assert raw.frames.dims == ("scan", "det_y", "det_x")
    assert raw.frames.attrs["units"] == "counts"
    assert raw.positions.dims == ("scan", "axis") and raw.positions.attrs["units"] == "px"
    assert list(raw.axis.values) == ["y", "x"]
    assert raw.attrs["units"]["wavelength"] == "m"
    assert raw.attrs["wavelength"] == pytest.approx(1e-10, abs=0)
    assert raw.attrs["energy_ev"] == pytest.approx(12398.4, rel=1e-4)
    assert raw.probe.dtype == np.complex64
    assert tree["priors"].pupil.dtype == np.complex64
    tile = tree["reconstruct/tile_000"]
    assert tile.object.dtype == np.complex64 and tile.loss.dims == ("iteration",)
    assert tree["subsample"].kept.values.tolist() == list(range(0, 40, 3))
    sub = store.read_raw(subsample=True)
    np.testing.assert_array_equal(sub.frames, d.frames[::3])
    got = store.read_group("reconstruct/tile_000")
    assert got["params"]["defocus"] == 1e-6 and got["attrs"]["origin"] == [0, 0]
    assert store.read_group("metrics")["attrs"]["rmse"] == 0.1
    # frames: one chunk per frame, whole frames per shard
    fz = store.root["raw/frames"]
    assert fz.chunks == (1, 32, 32) and fz.shards[1:] == (32, 32)


def test_steps_skip_and_invalidate(tmp_path, make):
    store = RunStore.create(tmp_path / "r.zarr")
    d = make("farfield")
    k1 = store.write_raw(d)
    assert store.write_raw(d) == k1  # same input: skipped
    store.write_subsample([0, 1, 2])
    calls = []
    for p in ({"lr": 1}, {"lr": 1}, {"lr": 2}):
        with store.step("reconstruct/t0", p, depends_on=["subsample"]) as st:
            if not st.done:
                calls.append(p["lr"])
                st.write_array("object", np.ones((4, 4), complex))
        with pytest.raises(RuntimeError):
            with store.step("reconstruct/t0", p, depends_on=["subsample"]) as st2:
                st2.write_array("object", np.ones(2))
    assert calls == [1, 2]
    assert store.is_complete("reconstruct/t0", {"lr": 2})
    assert not store.is_complete("reconstruct/t0", {"lr": 1})
    # changing a parameter of "subsample" invalidates downstream only
    store.write_subsample([0, 1])
    assert store.is_complete("raw") and store.is_complete("subsample")
    assert not store.is_complete("reconstruct/t0")
    # a new raw invalidates the whole chain
    d.wavelength = 2e-10
    store.write_raw(d)
    assert not store.is_complete("subsample")
    with pytest.raises(DataError, match="not complete"):
        store.step("priors", "x", depends_on=["subsample"]).__enter__()
    assert fingerprint({"a": 1.0, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1.0})
    assert fingerprint(np.zeros(3)) != fingerprint(np.zeros(3, np.float32))


def test_failed_step_is_not_complete(tmp_path, make):
    store = RunStore.create(tmp_path / "r.zarr")
    d = make("farfield")
    bad = d.frames.copy()
    bad[4, 2, 2] = np.nan

    def get(a, b):
        return bad[a:b]

    d.frames = LazyFrames(get, bad.shape)  # lazy: checked block by block while writing
    with pytest.raises(DataError, match="NaN"):
        store.write_raw(d)
    assert not store.is_complete("raw")
    with pytest.raises(DataError, match="incomplete"):
        store.read_raw()


_CHILD = """
import sys, time, numpy as np
sys.path.insert(0, {repo!r})
from storage.store import RunStore
from ptytasks.lazy_frames import LazyFrames
from ptytasks.data import PtychoData
n, f = 64, 64
def get(a, b):
    if a >= 16:  # after the first shards: announce, then hang until killed
        open({ready!r}, "w").close()
        time.sleep(600)
    return np.ones((b - a, f, f), np.float32)
d = PtychoData("farfield", LazyFrames(get, (n, f, f)), 1e-10, 1e-8, (100, 100),
               positions_px=np.zeros((n, 2)) + 10)
store = RunStore({path!r})
store.write_raw(d, "fp")
"""


def test_sigkill_mid_write_then_rerun(tmp_path, monkeypatch):
    import storage.layout as L

    path, ready = str(tmp_path / "r.zarr"), str(tmp_path / "ready")
    RunStore.create(path)
    code = textwrap.dedent(_CHILD).format(repo=REPO, ready=ready, path=path)
    # tiny shards so that some are on disk before the kill
    code = code.replace("from storage.store", "import storage.layout as L\n"
                        "L.FRAME_SHARD_BYTES = L.WRITE_BLOCK_BYTES = 8 * 64 * 64 * 4\n"
                        "from storage.store")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        t0 = time.time()
        while not os.path.exists(ready):
            assert proc.poll() is None, "child died early"
            assert time.time() - t0 < 60, "child never reached the write"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    store = RunStore(path)
    assert store.exists("raw/frames")  # partially written ...
    assert store.root["raw/frames"][0].max() == 1
    assert not store.is_complete("raw")  # ... but not marked complete
    from ptytasks.data import PtychoData

    monkeypatch.setattr(L, "FRAME_SHARD_BYTES", 8 * 64 * 64 * 4)
    d = PtychoData("farfield", np.full((64, 64, 64), 2, np.float32), 1e-10, 1e-8, (100, 100),
                   positions_px=np.zeros((64, 2)) + 10)  # fmt: skip
    store.write_raw(d, "fp")
    assert store.is_complete("raw", "fp")
    assert (store.read_raw().frames == 2).all()


def test_raw_step_is_rewritten_when_its_mask_meta_or_truth_change(tmp_path, make):
    """Everything raw/ holds is in the raw step's fingerprint: a changed detector mask or
    added ground truth is written, not skipped as done."""
    d = make("farfield", truth=False)
    s = RunStore(tmp_path / "run.zarr")
    d.meta["mask"] = np.ones(d.frame_shape, bool)
    k1 = s.write_raw(d)
    d.meta["mask"][3, 4] = False
    k2 = s.write_raw(d)
    assert k2 != k1 and int((~s.read_raw().meta["mask"]).sum()) == 1
    d.meta["dose"] = 5.0
    k3 = s.write_raw(d)
    d.ground_truth = {"object": np.ones(d.object_shape, np.complex64)}
    k4 = s.write_raw(d)
    assert len({k1, k2, k3, k4}) == 4 and s.read_raw().ground_truth is not None
    assert s.write_raw(d) == k4  # nothing changed: skipped
