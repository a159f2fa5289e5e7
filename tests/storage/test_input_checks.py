"""Inputs that changed or are wrong: a re-ingest sees every file the reader reads; a probe
of the wrong shape and positions in unknown or wrong units are refused at ingest, naming
the file and the field."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import tifffile

from storage.cxi import PTY, write_cxi
from storage.errors import DataError
from storage.readers import read_any
from storage.readers.hdf5_generic import read_hdf5
from storage.readers.sources import source_files
from storage.readers.tiff import read_tiff
from storage.store import RunStore
from storage.validate import validate_data

GEO = {"wavelength": 1e-10, "pixel_size": 1e-8}
FRAMES = np.random.default_rng(0).poisson(5, (3, 8, 8)).astype(np.uint16)
CSV = "y,x\n0,0\n3,1\n7,2\n"
CSV_FIXED = "y,x\n0,0\n5,1\n7,2\n"  # one row corrected: the same size, other positions


def _later(path, step_s: int = 5) -> None:
    """Move ``path``'s mtime on: a rewrite seconds later, not within the clock's tick."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + step_s * 10**9))


# ----------------------------------------------------------------- 1: the ingest fingerprint
def test_reingest_after_sidecar_correction_takes_new_positions(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", FRAMES, photometric="minisblack")
    side = tmp_path / "t.csv"
    side.write_text(CSV)
    store = RunStore.create(tmp_path / "r.zarr")
    key = store.ingest(tmp_path / "t.tif", margin=1, **GEO)
    assert store.ingest(tmp_path / "t.tif", margin=1, **GEO) == key  # unchanged: kept
    np.testing.assert_allclose(store.read_raw().positions_px[1], [4, 2])
    side.write_text(CSV_FIXED)
    new = store.ingest(tmp_path / "t.tif", margin=1, **GEO)
    assert new != key
    np.testing.assert_allclose(store.read_raw().positions_px[1], [6, 2])


def test_reingest_after_positions_file_correction(tmp_path):
    np.save(tmp_path / "f.npy", FRAMES)
    pos = tmp_path / "scan.csv"  # not a sidecar: named by positions=
    pos.write_text(CSV)
    store = RunStore.create(tmp_path / "r.zarr")
    key = store.ingest(tmp_path / "f.npy", positions=str(pos), margin=1, **GEO)
    pos.write_text(CSV_FIXED)
    _later(pos)
    assert store.ingest(tmp_path / "f.npy", positions=str(pos), margin=1, **GEO) != key
    np.testing.assert_allclose(store.read_raw().positions_px[1], [6, 2])


def test_reingest_after_one_frame_of_a_folder_is_rewritten(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, fr in enumerate(FRAMES):
        tifffile.imwrite(folder / f"f{i:03d}.tif", fr)
    (tmp_path / "frames.csv").write_text(CSV)
    store = RunStore.create(tmp_path / "r.zarr")
    key = store.ingest(folder, **GEO)
    fixed = FRAMES[1] + 1
    tifffile.imwrite(folder / "f001.tif", fixed)  # in place: the folder's mtime stays
    _later(folder / "f001.tif")
    assert store.ingest(folder, **GEO) != key
    np.testing.assert_array_equal(store.read_raw().frames[1], fixed)


def test_source_files_lists_what_the_readers_read(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, fr in enumerate(FRAMES):
        tifffile.imwrite(folder / f"f{i:03d}.tif", fr)
    (folder / "notes.txt").write_text("not a frame")
    (tmp_path / "frames.csv").write_text(CSV)
    assert source_files(folder) == [*sorted(folder.glob("*.tif")), tmp_path / "frames.csv"]
    tifffile.imwrite(tmp_path / "t.tif", FRAMES, photometric="minisblack")
    (tmp_path / "t_positions.csv").write_text(CSV)
    assert source_files(tmp_path / "t.tif") == [tmp_path / "t.tif", tmp_path / "t_positions.csv"]
    np.save(tmp_path / "f.npy", FRAMES)
    np.save(tmp_path / "f_positions.npy", np.zeros((3, 2)))
    assert source_files(tmp_path / "f.npy") == [tmp_path / "f.npy", tmp_path / "f_positions.npy"]
    assert source_files(tmp_path / "f.npy", positions=tmp_path / "frames.csv") == [
        tmp_path / "f.npy", tmp_path / "frames.csv"]  # fmt: skip
    assert source_files(tmp_path / "f.npy", positions=np.zeros((3, 2))) == [tmp_path / "f.npy"]


# ----------------------------------------------------------------- 2: the probe's shape
def test_probe_of_another_shape_than_the_frames_is_refused(tmp_path, make):
    path = write_cxi(tmp_path / "x.cxi", make("farfield", n=4, frame=8))
    with h5py.File(path, "a") as f:
        del f[f"{PTY}/probe"]
        f[f"{PTY}/probe"] = np.ones((5, 5), np.complex64)
    for read in (lambda: read_any(path), lambda: RunStore.create(tmp_path / "r.zarr").ingest(path)):
        with pytest.raises(DataError, match=r"probe is 5x5 but the frames are 8x8") as ei:
            read()
        assert ei.value.file == str(path) and ei.value.field == "probe"
    for modality in ("nearfield", "coded"):
        d = make(modality, frame=8)
        d.probe = d.probe[:5, :5]
        with pytest.raises(DataError, match="probe"):
            validate_data(d, "mem.cxi")
    d = make("fourier", frame=8)  # a pupil modality: its stored probe is no window
    d.probe = np.ones((5, 5), np.complex64)
    validate_data(d)


def test_a_detector_mask_of_another_shape_is_refused_not_dropped(tmp_path, make):
    """A mask made for another detector (or binning) names its field; it was dropped and the
    run went on with every pixel trusted."""
    from storage.cxi import DET

    path = write_cxi(tmp_path / "x.cxi", make("farfield", n=4, frame=8))
    with h5py.File(path, "a") as f:
        if f"{DET}/mask" in f:
            del f[f"{DET}/mask"]
        f[f"{DET}/mask"] = np.zeros((5, 5), np.uint32)
    with pytest.raises(DataError, match=r"shape \(5, 5\)") as ei:
        read_any(path)
    assert ei.value.field == f"{DET}/mask"
    d = make("farfield", n=4, frame=8)
    d.meta = {**d.meta, "mask": np.ones((5, 5), bool)}
    with pytest.raises(DataError, match="mask") as ei:
        RunStore.create(tmp_path / "r.zarr").write_raw(d)  # e.g. a generic HDF5's mask
    assert ei.value.field == "mask"


def test_a_ground_truth_smaller_than_the_object_is_refused(make):
    d = make("farfield", n=4, frame=8)
    d.ground_truth = {**d.ground_truth, "object": d.ground_truth["object"][:-3, :-3]}
    with pytest.raises(DataError, match="smaller than the object") as ei:
        validate_data(d, "t.cxi")
    assert ei.value.field == "ground_truth.object"


# ----------------------------------------------------------------- 3: position units
@pytest.mark.parametrize("units", ["um", "nm", "metres"])
def test_unknown_position_units_are_refused(tmp_path, units):
    tifffile.imwrite(tmp_path / "t.tif", FRAMES, photometric="minisblack")
    (tmp_path / "t.csv").write_text(CSV)
    with pytest.raises(DataError, match="'px'.*'m'") as ei:
        read_tiff(tmp_path / "t.tif", positions_units=units, **GEO)
    assert ei.value.field == "positions_units" and ei.value.file == str(tmp_path / "t.tif")
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["frames"] = FRAMES
        f["pos"] = np.array([[0, 0], [3, 1], [7, 2]], float)
    with pytest.raises(DataError, match="positions_units"):
        read_hdf5(tmp_path / "s.h5", {"frames": "frames", "positions": "pos",
                                      "positions_units": units, **GEO})  # fmt: skip


def test_pixel_positions_declared_as_metres_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", FRAMES, photometric="minisblack")
    side = tmp_path / "t.csv"
    side.write_text("y,x\n0,0\n30,15\n15,30\n")
    with pytest.raises(DataError, match="positions_units='px'") as ei:
        read_tiff(tmp_path / "t.tif", positions_units="m", **GEO)
    assert ei.value.file == str(tmp_path / "t.tif") and ei.value.field == str(side)
    with pytest.raises(DataError, match="positions_units"):
        RunStore.create(tmp_path / "r.zarr").ingest(tmp_path / "t.tif", positions_units="m",
                                                    **GEO)  # fmt: skip
    d = read_tiff(tmp_path / "t.tif", positions_units="px", **GEO)  # as pixels: fine
    assert max(d.object_shape) < 64
    d.positions_px = d.positions_px / GEO["pixel_size"]  # any reader's data: validation too
    d.object_shape = tuple(int(v) + 16 for v in d.positions_px.max(0))
    with pytest.raises(DataError, match="wrong units") as ei:
        validate_data(d, "x.cxi")
    assert ei.value.field == "positions_px"


def test_cli_ingest_with_unknown_units_exits_2(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    tifffile.imwrite(tmp_path / "t.tif", FRAMES, photometric="minisblack")
    (tmp_path / "t.csv").write_text(CSV)
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "t.tif"), "-o",
                                   str(tmp_path / "r.zarr"), "--option", "positions_units=um",
                                   "--option", "wavelength=1e-10", "--option",
                                   "pixel_size=1e-8"])  # fmt: skip
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output  # one line, no traceback
    assert str(tmp_path / "t.tif") in lines[0] and "[positions_units]" in lines[0], lines[0]
