"""Readers: synthetic files of every format, and the three real shared datasets."""

from __future__ import annotations

import bz2
import math
import shutil

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from ptytasks.lazy_frames import LazyFrames
from storage.errors import DataError
from storage.readers import read_any
from storage.readers.fpm_mat import led_spiral, led_wavevectors, read_fpm_mat
from storage.readers.hdf5_generic import read_hdf5
from storage.readers.npz import read_npz
from storage.readers.stem4d import read_stem4d
from storage.readers.tiff import read_tiff
from storage.store import RunStore


def _corner_frames(n=5, f=16, seed=0):
    rng = np.random.default_rng(seed)
    probe = np.zeros((f, f), complex)
    probe[6:10, 6:10] = 1
    obj = np.exp(1j * rng.uniform(0, 1, size=(n, f, f)))
    return (np.abs(np.fft.fft2(probe * obj)) ** 2).astype(np.float32)  # zero freq at [0, 0]


def test_npz_tike_layout(tmp_path):
    frames = _corner_frames()
    scan = np.array([[-5.0, -3.0], [0, 0], [4, 2], [7.5, -1], [1, 9]], np.float32)
    path = tmp_path / "s.npz"
    np.savez(path, data=frames[None], scan=scan[None], probe=np.ones((1, 1, 16, 16), complex))
    packed = tmp_path / "s.npz.bz2"
    packed.write_bytes(bz2.compress(path.read_bytes()))
    for p in (path, packed):
        d = read_any(p, margin=4)
        assert d.meta["fftshifted"] and d.meta["nominal"] == ["wavelength", "pixel_size"]
        np.testing.assert_array_equal(d.frames, np.fft.fftshift(frames, axes=(-2, -1)))
        np.testing.assert_allclose(d.positions_px, scan - scan.min(0) + 4)
        assert d.object_shape == (math.ceil(4 + 12.5 + 16 + 4), 4 + 12 + 16 + 4)
        assert d.probe.shape == (16, 16) and d.probe.dtype == np.complex64
    d = read_npz(path, fftshift=False, wavelength=1e-10, pixel_size=2e-8)
    np.testing.assert_array_equal(d.frames, frames)
    assert "nominal" not in d.meta or d.meta["nominal"] == []


def test_npy_with_csv_in_metres(tmp_path):
    frames = np.random.default_rng(0).poisson(3, (4, 8, 8)).astype(np.uint16)
    np.save(tmp_path / "f.npy", frames)
    (tmp_path / "f_positions.csv").write_text("x_m,y_m\n0,0\n1e-7,0\n0,2e-7\n1e-7,2e-7\n")
    d = read_any(tmp_path / "f.npy", wavelength=1e-10, pixel_size=1e-8, margin=0, lazy=True)
    assert isinstance(d.frames, LazyFrames)
    np.testing.assert_allclose(d.positions_px, [[0, 0], [0, 10], [20, 0], [20, 10]])
    np.testing.assert_array_equal(np.asarray(d.frames), frames)


def _stem_h5(path, sy=6, sx=5, k=16, dtype=np.uint16):
    data = np.random.default_rng(0).poisson(4, (sy, sx, k, k)).astype(dtype)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("experiment/4dstem", data=data, chunks=(1, sx, k, k))
        ds.attrs["energy_ev"] = 300e3
        ds.attrs["angle_per_pixel"] = 1e-3
    return data


def test_stem4d_hdf5_and_npy(tmp_path):
    data = _stem_h5(tmp_path / "s.h5")
    d = read_any(tmp_path / "s.h5", step=0.5e-10, lazy=True, margin=2)
    assert d.n_frames == 30 and d.frame_shape == (16, 16)
    assert d.wavelength == pytest.approx(1.9687e-12, rel=1e-3)  # 300 keV electrons
    assert d.pixel_size == pytest.approx(d.wavelength / (16 * 1e-3), abs=0)
    np.testing.assert_array_equal(d.frames[7], data[1, 2])  # frame 7 = row 1, column 2
    np.testing.assert_array_equal(d.frames[4:13], data.reshape(30, 16, 16)[4:13])
    step_px = 0.5e-10 / d.pixel_size
    np.testing.assert_allclose(d.positions_px[7], [2 + step_px, 2 + 2 * step_px])
    np.save(tmp_path / "s.npy", data)
    e = read_any(tmp_path / "s.npy", step=(0.5e-10, 0.5e-10), energy_ev=300e3,
                 angle_per_pixel=1e-3, margin=2)  # fmt: skip
    np.testing.assert_array_equal(e.frames, data.reshape(30, 16, 16))
    np.testing.assert_allclose(e.positions_px, d.positions_px)
    with pytest.raises(DataError, match="step"):
        read_stem4d(tmp_path / "s.h5")


def test_tiff_stack_and_folder(tmp_path):
    frames = np.random.default_rng(0).poisson(5, (3, 12, 10)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "st.tif", frames, photometric="minisblack")  # 3 pages
    tifffile.imwrite(tmp_path / "rgb.tif", frames)  # guessed planar RGB: one page
    (tmp_path / "rgb.csv").write_text("y,x\n0,0\n3.5,1\n7,2\n")
    rgb = read_tiff(tmp_path / "rgb.tif", wavelength=1e-10, pixel_size=1e-8, lazy=True)
    np.testing.assert_array_equal(rgb.frames[2], frames[2])
    (tmp_path / "st.csv").write_text("y,x\n0,0\n3.5,1\n7,2\n")
    d = read_any(tmp_path / "st.tif", wavelength=1e-10, pixel_size=1e-8, margin=1)
    np.testing.assert_array_equal(d.frames, frames)
    np.testing.assert_allclose(d.positions_px, [[1, 1], [4.5, 2], [8, 3]])
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, fr in enumerate(frames):
        tifffile.imwrite(folder / f"f{i:03d}.tiff", fr)
    e = read_tiff(folder, positions=tmp_path / "st.csv", wavelength=1e-10, pixel_size=1e-8,
                  margin=1, lazy=True)  # fmt: skip
    np.testing.assert_array_equal(e.frames[1:], frames[1:])
    with pytest.raises(DataError, match="pixel_size"):
        read_tiff(tmp_path / "st.tif", wavelength=1e-10)


def test_hdf5_mapping(tmp_path):
    frames = np.random.default_rng(0).poisson(5, (4, 8, 8)).astype(np.float32)
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["a/frames"] = np.moveaxis(frames, 0, -1)  # frames last
        f["a/xy"] = np.array([[0, 0], [1e-7, 0], [0, 1e-7], [1e-7, 1e-7]])  # (x, y) metres
        f["src"] = 0
        f["src"].attrs["lambda"] = 1e-10
        f["det/dist"] = 2.0
        f["det/pix"] = 75e-6
    mapping = {"frames": "a/frames", "frames_axes": "yxs", "positions": "a/xy",
               "positions_order": "xy", "wavelength": "src@lambda", "distance": "det/dist",
               "detector_pixel": "det/pix"}  # fmt: skip
    d = read_any(tmp_path / "g.h5", mapping=mapping, margin=0)
    np.testing.assert_array_equal(d.frames, frames)
    px = 1e-10 * 2.0 / (8 * 75e-6)
    assert d.pixel_size == pytest.approx(px)
    np.testing.assert_allclose(d.positions_px[1], [0, 1e-7 / px])
    with pytest.raises(DataError, match="not in the file"):
        read_hdf5(tmp_path / "g.h5", {**mapping, "distance": "nope"})


def test_hdf5_mapping_mask_follows_fftshift_and_flags_are_checked(tmp_path):
    """The detector mask is shifted with the frames (it marked the wrong pixels); a flag that
    is not true/false and an unknown positions_order are refused, not read as true / yx."""
    frames = np.random.default_rng(0).poisson(5, (4, 8, 8)).astype(np.float32)
    bad = np.zeros((8, 8), bool)
    bad[1, 2] = True  # in the file's (corner-centred) pixel order
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["frames"] = frames
        f["bad"] = bad
        f["k4"] = frames.reshape(2, 2, 8, 8)
        f["beam"] = 3e5
        f["pos"] = np.array([[0, 0], [0, 1e-8], [1e-8, 0], [1e-8, 1e-8]])
    mapping = {"frames": "frames", "positions": "pos", "wavelength": 1e-10,
               "pixel_size": 1e-8, "mask": "bad", "mask_bad": True, "fftshift": True}
    d = read_hdf5(tmp_path / "g.h5", mapping)
    np.testing.assert_array_equal(d.frames, np.fft.fftshift(frames, axes=(-2, -1)))
    assert np.argwhere(~d.meta["mask"]).tolist() == [[5, 6]]
    for key, value in (("fftshift", "no"), ("mask_bad", "false"), ("positions_order", "XY")):
        with pytest.raises(DataError, match=f"mapping.{key}"):
            read_hdf5(tmp_path / "g.h5", {**mapping, key: value})
    # a 4-D (4D-STEM) dataset keeps fftshift, the mask and geometry named by a path
    four = {"frames": "k4", "energy_ev": "beam", "pixel_size": 2e-11, "step": 1e-10, "mask": "bad",
            "mask_bad": True, "fftshift": True}
    e = read_hdf5(tmp_path / "g.h5", four)
    np.testing.assert_array_equal(e.frames, np.fft.fftshift(frames, axes=(-2, -1)))
    assert np.argwhere(~e.meta["mask"]).tolist() == [[5, 6]]
    with pytest.raises(DataError, match="mapping.positions"):
        read_hdf5(tmp_path / "g.h5", {**four, "positions": "bad"})
    with pytest.raises(DataError, match="mapping.step"):
        read_hdf5(tmp_path / "g.h5", {**mapping, "step": 1e-10})


def _reference_k(x0, y0, h=90.88, t=1.0, n=1.52):
    """The fixed-point iteration of the original MATLAB code, written independently."""
    lat = math.hypot(x0, y0)
    off = 0.0
    for _ in range(200):
        tg = math.asin((lat - off) / math.hypot(lat - off, h) / n)
        off = t * math.tan(tg)
    na = (lat - off) / math.hypot(lat - off, h)
    phi = math.atan2(y0, x0)
    return -na * math.sin(phi), -na * math.cos(phi)


def test_fpm_geometry(tmp_path):
    sp = led_spiral((18, 20), 15)
    assert sp[:9].tolist() == [[18, 20], [19, 20], [19, 21], [18, 21], [17, 21], [17, 20],
                               [17, 19], [18, 19], [19, 19]]  # fmt: skip
    assert len({tuple(p) for p in sp}) == 225 and np.ptp(sp, 0).tolist() == [14, 14]
    k, na, led = led_wavevectors(0.2, 0.35, 5.0)
    for i in (0, 1, 17, 224):
        np.testing.assert_allclose(k[i], _reference_k(*led[i]), atol=1e-7)
    assert na.max() < 0.5
    imgs = np.random.default_rng(0).uniform(0, 2, (8, 8, 9)).astype(np.float32)
    scipy.io.savemat(tmp_path / "f.mat", {"imlow_HDR": imgs, "wlength": 5.32e-7, "z": 1e-5,
                                          "xint": 0.0, "yint": 0.35, "theta": 0})  # fmt: skip
    d = read_any(tmp_path / "f.mat", grid=3)
    assert d.modality == "fourier" and d.frames.shape == (9, 8, 8)
    np.testing.assert_array_equal(d.frames[4], imgs[:, :, 4])
    k3, _, _ = led_wavevectors(0.0, 0.35, 0.0, grid=3)
    np.testing.assert_allclose(d.wavevectors, k3 / 5.32e-7)
    assert d.pixel_size == pytest.approx(1.845e-6 / 4) and d.object_shape == (32, 32)
    with pytest.raises(DataError, match="LED grid"):
        read_fpm_mat(tmp_path / "f.mat")


def test_content_sniffing(tmp_path):
    frames = _corner_frames()
    np.savez(tmp_path / "x.npz", data=frames, scan=np.zeros((5, 2)))
    shutil.copy(tmp_path / "x.npz", tmp_path / "noext")
    assert read_any(tmp_path / "noext").n_frames == 5
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    with pytest.raises(DataError, match="unrecognised"):
        read_any(tmp_path / "junk.bin")


# ---------------------------------------------------------------- the real datasets
@pytest.mark.realdata
def test_real_farfield_siemens_star(data_dir, tmp_path):
    p = data_dir / "farfield-xray-siemens-star" / "siemens-star-small.npz.bz2"
    if not p.is_file():
        pytest.skip(f"{p} absent")
    d = read_any(p)
    assert d.frames.shape == (516, 128, 128) and d.meta["fftshifted"]
    c = d.frames.mean(0)
    assert c[54:74, 54:74].sum() > c[:10, :10].sum() * 10  # centred after the shift
    assert d.positions_px.min() == pytest.approx(8)
    assert (d.positions_px.max(0) + 128 <= np.asarray(d.object_shape)).all()
    assert 450 < d.object_shape[0] < 520
    store = RunStore.create(tmp_path / "r.zarr")
    store.write_raw(d)  # (ingest would decompress the archive a second time)
    assert store.read_raw(lazy=True).frames.shape == (516, 128, 128)


@pytest.mark.realdata
def test_real_nearfield_p25(data_dir, tmp_path):
    p = data_dir / "nearfield-xray-p25" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
    if not p.is_file():
        pytest.skip(f"{p} absent")
    d = read_any(p, z1=3.65e-3)
    assert d.frames.shape == (200, 100, 100)
    assert d.pixel_size == pytest.approx(179e-9, rel=0.01)
    store = RunStore.create(tmp_path / "r.zarr")
    store.ingest(p, z1=3.65e-3)
    back = store.read_raw()
    assert back.modality == "nearfield" and back.params["z1"] == 3.65e-3
    assert back.meta["mask"].sum() == 9995


@pytest.mark.realdata
def test_real_fpm_bloodsmear(data_dir):
    p = data_dir / "fpm-bloodsmear" / "bloodsmear_green.mat"
    if not p.is_file():
        pytest.skip(f"{p} absent")
    d = read_any(p)
    assert d.frames.shape == (225, 128, 128) and d.wavevectors.shape == (225, 2)
    assert d.wavelength == pytest.approx(532e-9)
    s = np.hypot(*d.wavevectors.T) * d.wavelength  # illumination NA per LED
    assert s[0] < 0.01 and 0.35 < s.max() < 0.45  # ~28 mm off-axis at 90.88 mm
    assert (s < 0.1).sum() >= 9  # bright-field LEDs inside the objective NA
    q = read_any(data_dir / "fpm-bloodsmear" / "blood_aberration.mat")
    assert q.meta["pupil"].shape == (128, 128) and q.wavelength == pytest.approx(630e-9)


def test_reader_edge_cases_of_real_exports(tmp_path):
    """Frame folders numbered without padding are read in the camera's order; a headerless
    position CSV from np.savetxt (exponent notation) is read; positions in metres without
    an object pixel size are refused instead of divided by the placeholder pixel."""
    from storage.readers.npz import read_npz
    from storage.readers.sources import tiff_frame_files

    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("frame_10.tif", "frame_2.tif", "frame_1.tif"):
        (folder / name).touch()
    assert [p.name for p in tiff_frame_files(folder)] == ["frame_1.tif", "frame_2.tif",
                                                           "frame_10.tif"]
    frames = np.ones((3, 8, 8), np.float32)
    tifffile.imwrite(tmp_path / "st.tif", frames)
    np.savetxt(tmp_path / "st.csv", [[1.0, 1.0], [4.5, 2.0], [8.0, 3.0]], delimiter=",")
    d = read_tiff(tmp_path / "st.tif", wavelength=1e-10, pixel_size=1e-8, margin=1)
    np.testing.assert_allclose(d.positions_px, [[1, 1], [4.5, 2], [8, 3]])
    np.savez(tmp_path / "m.npz", data=frames, positions_m=np.array([[0, 0], [5e-7, 0],
                                                                     [0, 5e-7]]))
    with pytest.raises(DataError, match="pixel_size"):
        read_npz(tmp_path / "m.npz")
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    tifffile.imwrite(rgb / "f0.tif", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"f0.tif.*one 2-D frame per file"):
        read_any(rgb, positions=tmp_path / "st.csv", wavelength=1e-10, pixel_size=1e-8)
    pos = read_npz(tmp_path / "m.npz", pixel_size=1e-8).positions_px
    assert pos[1, 0] - pos[0, 0] == pytest.approx(50)


def test_matlab_v73_complex_pupil_is_read(tmp_path):
    """MATLAB v7.3 (HDF5) keeps a complex variable as a {real, imag} compound: read as
    complex (it escaped as a raw TypeError); a variable that is not numbers is named."""
    from storage.readers.fpm_mat import read_pupil

    pupil = (np.arange(12.0).reshape(3, 4) + 1j).astype(np.complex128)
    compound = np.dtype([("real", "<f8"), ("imag", "<f8")])
    with h5py.File(tmp_path / "p.mat", "w") as f:
        a = np.empty(pupil.T.shape, compound)  # column-major, as MATLAB writes it
        a["real"], a["imag"] = pupil.T.real, pupil.T.imag
        f["aberration"] = a
        f["name"] = np.bytes_("abc")
    np.testing.assert_array_equal(read_pupil(tmp_path / "p.mat"), pupil.astype(np.complex64))
    with pytest.raises(DataError, match="name"):
        read_pupil(tmp_path / "p.mat", key="name")


def test_non_square_far_field_frames_need_their_pixel_size(tmp_path):
    """lambda z / (N dx) differs per axis for N_y x N_x frames: one pixel from the longer
    side stretched the scan N_x / N_y times along y. Refused unless pixel_size is given."""
    from storage.readers.npz import read_npz

    frames = np.ones((2, 16, 32), np.float32)
    np.savez(tmp_path / "r.npz", data=frames, positions=np.array([[0.0, 0.0], [1.0, 1.0]]),
             wavelength=1e-10, distance=2.0, detector_pixel=75e-6)
    with pytest.raises(DataError, match="pixel_size.*16x32"):
        read_npz(tmp_path / "r.npz")
    assert read_npz(tmp_path / "r.npz", pixel_size=1e-8).pixel_size == 1e-8
