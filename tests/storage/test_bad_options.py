"""Reader options and outputs a user gets wrong (audit of the command line): each is one
line naming the file and the option or folder, exit 2, never a traceback or silently
scrambled frames."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.params import ClusterParams
from storage.cxi import write_cxi

runner = CliRunner()
FRAMES = np.random.default_rng(0).poisson(5, (4, 16, 16)).astype(np.float32)


@pytest.fixture
def npz(tmp_path):
    p = tmp_path / "d.npz"
    pos = np.array([[0, 0], [0, 4], [4, 0], [4, 4]], np.float64)
    np.savez(p, frames=FRAMES, positions=pos, wavelength=1e-10, pixel_size=1e-8)
    return p


def _ingest(src, out, *opts):
    args = ["ingest", str(src), "-o", str(out)]
    for o in opts:
        args += ["--option", o]
    res = runner.invoke(app, args)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    return res, lines


@pytest.mark.parametrize("opt, field", [("fftshift=maybe", "fftshift"),
                                        ("wavelength=abc", "wavelength"),
                                        ("lazy=yes", "lazy")])  # fmt: skip
def test_a_wrong_reader_option_is_one_line_naming_it(tmp_path, npz, opt, field):
    res, lines = _ingest(npz, tmp_path / "r.zarr", opt)
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert str(npz) in lines[0] and field in lines[0], lines[0]


def test_fftshift_auto_detects_instead_of_shifting_every_frame(tmp_path, npz):
    """``bool("auto")`` is true: the option shifted centred frames to the corners."""
    from storage.store import RunStore

    res, _ = _ingest(npz, tmp_path / "a.zarr", "fftshift=auto")
    assert res.exit_code == 0, res.output
    res, _ = _ingest(npz, tmp_path / "n.zarr", "fftshift=null")
    assert res.exit_code == 0, res.output
    plain = np.asarray(RunStore(tmp_path / "a.zarr", "r").read_raw().frames)
    assert np.array_equal(plain, np.asarray(RunStore(tmp_path / "n.zarr", "r").read_raw().frames))
    assert np.array_equal(plain, FRAMES)  # centred already: left as it is


def test_a_corrupt_compressed_chunk_names_the_file_and_frames(tmp_path):
    from ptytasks.simulate import simulate

    d = simulate("farfield", frame_size=16, n_positions=8, overlap=0.6, seed=0)
    src = tmp_path / "c.cxi"
    write_cxi(src, d)
    with h5py.File(src, "r+") as f:
        frames = f["entry_1/data_1/data"][()]
        del f["entry_1/data_1/data"]
        f.create_dataset("entry_1/data_1/data", data=frames, compression="gzip",
                         chunks=(1, 16, 16))  # fmt: skip
        off = f["entry_1/data_1/data"].id.get_chunk_info(5).byte_offset
    raw = bytearray(src.read_bytes())
    raw[off + 10 : off + 60] = b"\0" * 50
    src.write_bytes(raw)
    res, lines = _ingest(src, tmp_path / "r.zarr")
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert str(src) in lines[0] and "frames" in lines[0], lines[0]


def test_an_unwritable_store_location_is_one_line(tmp_path, npz):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder should be")
    res, lines = _ingest(npz, blocker / "r.zarr")
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "notes.txt" in lines[0] and "lock file" in lines[0], lines[0]


@pytest.mark.parametrize("cmd", [["simulate", "-m", "farfield"], ["train-learned", "--steps", "1"]])
def test_an_unwritable_output_folder_is_refused_before_any_work(cmd):
    """A folder that exists but takes no files (as root, permission bits do not tell: a
    pseudo file system does); train-learned found it only after training."""
    import os

    if not os.path.isdir("/proc") or os.access("/proc", os.W_OK) is False:
        pytest.skip("needs /proc (a folder that refuses new files even to root)")
    ext = ".pt" if cmd[0] == "train-learned" else ".cxi"
    res = runner.invoke(app, [*cmd, "-o", f"/proc/ptyflow-test{ext}"])
    text = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 2 and "not writable" in text, res.output


def test_a_scheduler_address_without_kind_address_is_refused():
    """It used to validate to kind 'local' and run on this machine, silently."""
    with pytest.raises(ValueError, match="address"):
        ClusterParams(address="tcp://sched:8786")
    assert ClusterParams(kind="address", address="tcp://sched:8786").kind == "address"


def test_train_learned_refuses_sizes_its_network_cannot_take_before_training(tmp_path):
    res = runner.invoke(app, ["train-learned", "--steps", "1", "--frame-size", "18", "-o",
                              str(tmp_path / "w.pt")])  # fmt: skip
    assert res.exit_code == 2 and "frame size" in res.output, res.output
    assert not (tmp_path / "w.pt").exists()


def test_a_file_whose_content_is_another_format_says_so(tmp_path):
    """A CXI saved as .npz failed with "File is not a zip file" and no hint."""
    from ptytasks.simulate import simulate

    src = tmp_path / "scan.npz"
    write_cxi(src, simulate("farfield", frame_size=16, n_positions=4, overlap=0.5, seed=0))
    res, lines = _ingest(src, tmp_path / "r.zarr")
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "content is hdf5" in lines[0] and "rename it .cxi" in lines[0], lines[0]


def test_a_failed_ingest_leaves_no_empty_store_behind(tmp_path, npz):
    """The store a failed ingest had just made stayed as an empty folder; a store that
    existed before is left alone."""
    res, _ = _ingest(npz, tmp_path / "new.zarr", "wavelength=abc")
    assert res.exit_code == 2 and not (tmp_path / "new.zarr").exists()
    assert _ingest(npz, tmp_path / "old.zarr")[0].exit_code == 0
    res, _ = _ingest(npz, tmp_path / "old.zarr", "wavelength=abc")
    assert res.exit_code == 2 and (tmp_path / "old.zarr" / "raw").exists()
