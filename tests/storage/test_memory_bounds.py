"""Readers keep memory bounded: declared-huge HDF5 datasets are refused before they are read,
``.npz.bz2`` is decompressed as a stream, and compressed (bitshuffle-LZ4) CXI is readable."""

from __future__ import annotations

import bz2
import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptytasks.lazy_frames import LazyFrames
from storage.cxi import read_cxi, write_cxi
from storage.errors import DataError
from storage.readers import _common as C
from storage.readers import read_any
from storage.readers.npz import read_npz
from storage.store import RunStore
from tests.storage.conftest import make_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _collect_h5py_garbage():
    """Collect h5py objects left in reference cycles (a caught exception's traceback) here,
    on the main thread: collected later inside zarr's event-loop thread they can deadlock
    on h5py's global lock."""
    yield
    gc.collect()


def _plant(path: Path, name: str, shape, dtype=np.complex64) -> None:
    """Add a chunked dataset that declares ``shape`` but stores no chunk (a few bytes)."""
    with h5py.File(path, "r+") as f:
        if name in f:
            del f[name]
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=tuple(min(64, s) for s in shape))


@pytest.mark.parametrize("lazy", [True, False])
def test_declared_huge_truth_is_refused_naming_file_and_field(tmp_path, lazy):
    path = tmp_path / "planted.cxi"
    write_cxi(path, make_data())
    _plant(path, "entry_1/ground_truth/object", (40_000, 40_000))  # 12.8 GB if read
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DataError) as e:
        read_cxi(path, lazy=lazy)
    assert e.value.field == "entry_1/ground_truth/object"
    assert e.value.file == str(path) and "refusing" in e.value.message
    del e  # the traceback refers to this frame: break the cycle (see the fixture)
    gc.collect()
    with pytest.raises(DataError, match="ground_truth/object"):  # ingest says the same
        RunStore.create(tmp_path / "run.zarr").ingest(path)


def test_aux_limit_is_checked_before_reading(tmp_path, monkeypatch):
    """The mechanism at a small scale: an 8 MiB truth against a 1 MiB limit."""
    path = tmp_path / "small.cxi"
    write_cxi(path, make_data())
    _plant(path, "entry_1/ground_truth/object", (1024, 1024))
    assert read_cxi(path).ground_truth["object"].shape == (1024, 1024)  # default: allowed
    monkeypatch.setattr(C, "AUX_LIMIT_BYTES", 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="8 MiB"):
            read_cxi(path, lazy=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes traced: the array was read before the check"


@pytest.mark.parametrize(
    ("name", "shape", "dtype"),
    [("entry_1/sample_1/geometry_1/translation", (6, 10_000_000), np.float64),
     ("entry_1/instrument_1/source_1/wavelength", (10_000_000_000,), np.float64),
     ("entry_1/ptyflow/meta/kept", (10_000_000_000,), np.int64)],
)  # fmt: skip
def test_declared_huge_metadata_is_never_allocated(tmp_path, name, shape, dtype):
    path = tmp_path / "meta.cxi"
    write_cxi(path, make_data())
    if "wavelength" in name:  # a foreign file: the wavelength is read from the dataset
        with h5py.File(path, "r+") as f:
            del f["entry_1/ptyflow"]
    _plant(path, name, shape, dtype)

    def read():
        try:
            read_cxi(path, lazy=True)  # refused, or (a scalar) its first element read
        except DataError as exc:
            return exc.field  # not exc: its traceback would hold this frame in a cycle

    _, peak = _peak(read)
    assert peak < 2**24, f"{peak} bytes traced reading {name} declared {shape}"


def test_mask_of_wrong_shape_is_not_read(tmp_path):
    """Refused by its declared shape, naming the field, before a byte of it is read."""
    path = tmp_path / "mask.cxi"
    write_cxi(path, make_data())
    _plant(path, "entry_1/instrument_1/detector_1/mask", (100_000, 100_000), np.uint32)
    with pytest.raises(DataError, match="detector_1/mask"):
        read_cxi(path, lazy=True)  # reading it would take 40 GB


def _npz_bz2(tmp_path, n=800, frame=64) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = rng.poisson(3.0, size=(1, n, frame, frame)).astype(np.float32)
    scan = np.stack([np.arange(n) % 20 * 4.0, np.arange(n) // 20 * 4.0], 1)[None]
    plain = tmp_path / "s.npz"
    np.savez(plain, data=frames, scan=scan)
    packed = tmp_path / "s.npz.bz2"
    packed.write_bytes(bz2.compress(plain.read_bytes(), 1))
    return packed, frames[0]


def _peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_npz_bz2_is_stream_decompressed(tmp_path):
    packed, frames = _npz_bz2(tmp_path)  # 13 MB of float32 frames
    size = frames.nbytes
    lazy, peak_lazy = _peak(lambda: read_npz(packed, fftshift=False, lazy=True))
    assert isinstance(lazy.frames, LazyFrames)
    assert peak_lazy < size / 4, f"lazy read traced {peak_lazy} bytes for {size}"
    np.testing.assert_array_equal(np.asarray(lazy.frames[5:9]), frames[5:9])
    eager, peak_eager = _peak(lambda: read_npz(packed, fftshift=False))
    np.testing.assert_array_equal(eager.frames, frames)
    # the archive decompressed once into a file, then each array read once
    assert peak_eager < 1.3 * size, f"eager read traced {peak_eager} bytes for {size}"
    np.testing.assert_allclose(lazy.positions_px, eager.positions_px)


def test_npz_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, data=np.zeros((2, 4, 4)), probe=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="Python objects"):
        read_npz(path, lazy=True)


def _bitshuffle_cxi(path: Path):
    import hdf5plugin

    d = make_data(n=8, frame=32)
    write_cxi(path, d)
    with h5py.File(path, "r+") as f:
        del f["entry_1/instrument_1/detector_1/data"], f["entry_1/data_1/data"]
        ds = f.create_dataset("entry_1/data_1/data", data=d.frames, chunks=(1, 32, 32),
                              **hdf5plugin.Bitshuffle(cname="lz4"))  # fmt: skip
        f["entry_1/instrument_1/detector_1/data"] = ds
        assert "32008" in ds._filters  # the bitshuffle filter really is on the dataset
    return d


def test_bitshuffle_lz4_cxi_reads_in_a_fresh_process(tmp_path):
    """The reader registers the filters itself (hdf5plugin): read and ingest in a process
    that imports nothing but ptyflow's storage."""
    path = tmp_path / "eiger.cxi"
    d = _bitshuffle_cxi(path)
    code = (
        "import json, sys, numpy as np\n"
        "from storage.readers import read_any\n"
        "from storage.store import RunStore\n"
        "d = read_any(sys.argv[1])\n"
        "s = RunStore.create(sys.argv[2]); s.ingest(sys.argv[1])\n"
        "z = s.read_raw().frames\n"
        "print(json.dumps([float(d.frames.sum()), float(z.sum()), list(z.shape)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "r.zarr")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    direct, ingested, shape = json.loads(out.stdout.strip().splitlines()[-1])
    assert direct == ingested == float(d.frames.sum()) and shape == [8, 32, 32]
    np.testing.assert_array_equal(read_any(path, lazy=True).frames[2], d.frames[2])
