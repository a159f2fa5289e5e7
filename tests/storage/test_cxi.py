"""CXI writer/reader: round trips and the real near-field P25 file."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from storage.cxi import read_cxi, write_cxi
from storage.errors import DataError

P25 = "nearfield-xray-p25/PETRAIII_P25_Near_Field_Ptycho.cxi"


@pytest.mark.parametrize("modality", ["farfield", "nearfield", "coded", "fourier"])
def test_round_trip(tmp_path, modality, make, same):
    d = make(modality)
    d.meta["mask"] = np.ones(d.frame_shape, bool)
    d.meta["mask"][0, 0] = False
    path = write_cxi(tmp_path / "x.cxi", d)
    back = read_cxi(path)
    same(d, back)
    assert back.frames.dtype == np.float32
    assert back.probe.dtype == np.complex64
    assert back.ground_truth["object"].dtype == np.complex64
    assert back.meta["dose"] == 1e6
    np.testing.assert_array_equal(back.meta["kept"], np.arange(d.n_frames))
    np.testing.assert_array_equal(back.meta["mask"], d.meta["mask"])
    with h5py.File(path) as f:  # standard CXI fields, with units
        assert f["entry_1/instrument_1/source_1/wavelength"].attrs["units"] == "m"
        assert f["entry_1/instrument_1/detector_1/data"].shape == d.frames.shape
        assert f["entry_1/instrument_1/detector_1/mask"][0, 0] == 1
    assert not list(tmp_path.glob(".*partial*"))


def test_lazy_and_overrides(tmp_path, make):
    d = make("farfield")
    path = write_cxi(tmp_path / "x.cxi", d)
    lazy = read_cxi(path, lazy=True, meta={"extra": 1})
    np.testing.assert_array_equal(lazy.frames[2:4], d.frames[2:4])
    np.testing.assert_array_equal(lazy.frames[-1], d.frames[-1])
    assert lazy.meta["extra"] == 1
    with pytest.raises(TypeError):
        read_cxi(path, bogus=1)


def test_foreign_farfield_geometry(tmp_path, make):
    """A file without the ptyflow group: pixel size from lambda z / (N p), positions from m."""
    d = make("farfield", truth=False)
    path = write_cxi(tmp_path / "x.cxi", d)
    with h5py.File(path, "a") as f:
        del f["entry_1/ptyflow"]
    back = read_cxi(path, margin=4)
    want = d.wavelength * d.distance / (16 * d.detector_pixel)
    assert back.pixel_size == pytest.approx(want)
    assert back.modality == "farfield"
    exp = (d.positions_px - d.positions_px.min(0)) * d.pixel_size / want + 4
    np.testing.assert_allclose(back.positions_px, exp, rtol=1e-6)
    assert back.object_shape[0] >= back.positions_px[:, 0].max() + 16


def test_errors(tmp_path, make):
    with pytest.raises(DataError, match="does not exist"):
        read_cxi(tmp_path / "none.cxi")
    bad = tmp_path / "bad.cxi"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(DataError, match="bad.cxi"):
        read_cxi(bad)
    d = make("farfield")
    path = write_cxi(tmp_path / "x.cxi", d)
    trunc = tmp_path / "trunc.cxi"
    trunc.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError):
        read_cxi(trunc)
    d.wavelength = 0.1  # nanometres by mistake
    with pytest.raises(DataError, match="nanometres"):
        write_cxi(tmp_path / "y.cxi", d)


@pytest.mark.realdata
def test_p25_nearfield(data_dir):
    path = data_dir / P25
    if not path.is_file():
        pytest.skip(f"{path} absent")
    with pytest.raises(DataError, match="z1"):
        read_cxi(path, modality="nearfield")
    d = read_cxi(path, z1=3.65e-3)
    assert d.modality == "nearfield"
    assert d.frames.shape == (200, 100, 100)
    assert d.pixel_size == pytest.approx(179e-9, rel=0.01)
    assert d.distance == pytest.approx(3.64e-3, rel=0.01)
    assert d.params["magnification"] == pytest.approx(308, rel=0.01)
    assert d.wavelength == pytest.approx(9.79e-11, rel=1e-3)
    assert d.positions_px.shape == (200, 2)
    assert d.positions_px.min() == pytest.approx(8.0)
    # ~20 um of travel at 179 nm per pixel
    assert 100 < np.ptp(d.positions_px[:, 0]) < 130
    assert d.meta["mask"].sum() == 100 * 100 - 5
    flat = read_cxi(path, z1=math.inf)
    assert flat.pixel_size == pytest.approx(55e-6)


@pytest.mark.parametrize(("key", "value"), [("wavelength", 0.0), ("wavelength", -1e-10),
                                            ("energy", 0.0)])  # fmt: skip
def test_foreign_file_with_no_positive_wavelength_names_its_field(tmp_path, make, key, value):
    """A foreign file's wavelength (or energy) of 0 once scaled the positions to inf with a
    bare numpy warning; now the reader refuses it, naming the field, before using it."""
    import warnings

    d = make("farfield", truth=False)
    path = write_cxi(tmp_path / "x.cxi", d)
    src = "entry_1/instrument_1/source_1"
    with h5py.File(path, "a") as f:
        del f["entry_1/ptyflow"]
        if key == "energy":
            del f[f"{src}/wavelength"]
        f[f"{src}/{key}"][()] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero on the way
        with pytest.raises(DataError, match=f"{src}/{key}"):
            read_cxi(path)


def test_a_rewritten_file_is_its_own_source(tmp_path, make):
    """A CXI that ptyflow wrote names itself as the source (its fingerprint, provenance),
    with the file it was made from beside; a rewrite with other counts is a new raw step."""
    from storage.store import RunStore

    d = make("farfield")
    d.meta["source"], d.meta["reader"] = "/data/orig.npz", "npz"
    path = write_cxi(tmp_path / "conv.cxi", d)
    back = read_cxi(path, lazy=True)
    assert back.meta["source"] == str(path) and back.meta["reader"] == "cxi"
    assert back.meta["origin_source"] == "/data/orig.npz"
    store = RunStore(tmp_path / "run.zarr")
    k1 = store.write_raw(back)
    d.frames = d.frames * 7
    write_cxi(path, d)
    k2 = store.write_raw(read_cxi(path, lazy=True))
    assert k1 != k2
    np.testing.assert_array_equal(store.read_raw().frames, d.frames)
