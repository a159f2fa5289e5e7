"""``ptyflow run`` with bad input (issue #22, item 7b): exit code 2 and one line naming the
file and the field, found before any Prefect server or flow starts -- for the same
malformed files that ``ptyflow ingest`` refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile
from typer.testing import CliRunner

from flows.cli import app
from ptytasks.data import PtychoData
from storage.cxi import write_cxi

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _valid(n: int = 6, f: int = 8) -> PtychoData:
    rng = np.random.default_rng(0)
    pos = np.stack([np.arange(n) * 2.0, np.arange(n) * 1.0], 1) + 2
    return PtychoData("farfield", rng.poisson(3, (n, f, f)).astype(np.float32), 1e-10, 1e-8,
                      (40, 40), positions_px=pos, distance=1.0, detector_pixel=5e-5)  # fmt: skip


def _foreign_cxi(path: Path, frames=None, translation=None, wavelength=None) -> Path:
    """A valid CXI file as another program would write it (no ptyflow group), then damaged."""
    write_cxi(path, _valid())
    with h5py.File(path, "a") as f:
        del f["entry_1/ptyflow"]
        if frames is not None:
            for key in ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data"):
                if key in f:
                    del f[key]
            if not isinstance(frames, str):  # "none": no frames at all
                f["entry_1/data_1/data"] = frames
        if translation is not None:
            del f["entry_1/sample_1/geometry_1/translation"]
            f["entry_1/sample_1/geometry_1/translation"] = translation
        if wavelength is not None:
            for key in ("wavelength", "energy"):
                if f"entry_1/instrument_1/source_1/{key}" in f:
                    del f[f"entry_1/instrument_1/source_1/{key}"]
            f["entry_1/instrument_1/source_1/wavelength"] = wavelength
    return path


def _frames(change) -> np.ndarray:
    fr = _valid().frames.copy()
    change(fr)
    return fr


# case: (file name, builder(path), text the one line must hold: the field, or what failed)
CASES = {
    "garbage": ("garbage.cxi", lambda p: p.write_bytes(b"garbage" * 50), "opening the CXI"),
    "empty": ("empty.npz", lambda p: p.write_bytes(b""), "npz archive"),
    "truncated": ("truncated.cxi",
                  lambda p: p.write_bytes(write_cxi(p, _valid()).read_bytes()[:3000]),
                  "truncated file"),
    "nan": ("nan.cxi", lambda p: _foreign_cxi(
        p, frames=_frames(lambda f: f.__setitem__((2, 1, 1), np.nan))), "[frames]"),
    "negative": ("negative.cxi", lambda p: _foreign_cxi(
        p, frames=_frames(lambda f: f.__setitem__((3, 2, 2), -5))), "[frames]"),
    "complex": ("complex.cxi", lambda p: _foreign_cxi(
        p, frames=_valid().frames.astype(np.complex64)), "[entry_1/data_1/data]"),
    "2d": ("frame2d.cxi", lambda p: _foreign_cxi(p, frames=_valid().frames[0]),
           "[entry_1/data_1/data]"),
    "no_frames": ("noframes.cxi", lambda p: _foreign_cxi(p, frames="none"),
                  "[entry_1/data_1/data]"),
    "nanometres": ("nm.cxi", lambda p: _foreign_cxi(p, wavelength=532.0),
                   "[entry_1/instrument_1/source_1/wavelength]"),
    "translation": ("trans.cxi", lambda p: _foreign_cxi(p, translation=np.zeros((5, 3))),
                    "[entry_1/sample_1/geometry_1/translation]"),
    "translation_nan": ("transnan.cxi", lambda p: _foreign_cxi(
        p, translation=np.where(np.eye(6, 3) > 0, np.nan, 0.0)),
        "[entry_1/sample_1/geometry_1/translation]"),
    "npz_positions": ("mismatch.npz", lambda p: np.savez(
        p, data=_valid().frames, scan=_valid().positions_px[:4]), "[scan]"),
    "tiff_no_geometry": ("t.tif", lambda p: (
        tifffile.imwrite(p, _valid().frames, photometric="minisblack"),
        np.savetxt(p.with_suffix(".csv"), _valid().positions_px, delimiter=",",
                   header="y,x", comments="")), "[wavelength]"),
    "mat_no_images": ("f.mat", lambda p: scipy.io.savemat(p, {"wlength": 5e-7}), "[imlow_HDR]"),
}  # fmt: skip


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("malformed")
    out = {}
    for case, (name, build, _) in CASES.items():
        sub = folder / case  # one folder each: sidecar files (t.csv) stay with their data
        sub.mkdir()
        build(sub / name)
        out[case] = sub / name
    return out


def _one_line(res, path: Path, expected: str) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1, res.output
    assert str(path) in lines[0] and expected in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_refuses_what_ingest_refuses(case, bad_files, tmp_path, monkeypatch):
    path, expected = bad_files[case], CASES[case][2]
    res = runner.invoke(app, ["ingest", str(path), "-o", str(tmp_path / "i.zarr")])
    ingest_line = _one_line(res, path, expected)

    def no_prefect(*a, **k):
        raise AssertionError("a Prefect API was started for bad input")

    monkeypatch.setattr("flows.serve.prefect_api", no_prefect)
    store = tmp_path / "r.zarr"
    res = runner.invoke(app, ["run", str(path), "-o", str(store), "--cluster", "none"])
    assert _one_line(res, path, expected) == ingest_line  # the same check, the same words
    from storage.store import RunStore

    if (store / "zarr.json").exists():
        assert not RunStore(store, "r").is_complete("raw")


def test_run_bad_input_real_process(bad_files, tmp_path):
    """The real command: exit 2, one line on stderr, nothing on stdout, no Prefect logs."""
    path = bad_files["nan"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    res = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path), "-o",
                          str(tmp_path / "r.zarr"), "--cluster", "none"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert str(path) in lines[0] and "[frames]" in lines[0] and "NaN" in lines[0]


def test_bad_input_or_settings_are_not_retried():
    """A bad file or setting fails the same way on every try: the tasks' retries (for lost
    workers and file-system hiccups) skip them, so the user gets one error, at once."""
    from prefect.states import Failed

    from flows.params import ConfigError
    from flows.tasks import worth_retrying
    from storage.errors import DataError

    assert not worth_retrying(None, None, Failed(data=DataError("f.cxi", "positions", "NaN")))
    assert not worth_retrying(None, None, Failed(data=ConfigError("tiling.grid: too fine")))
    assert worth_retrying(None, None, Failed(data=OSError("stale file handle")))


@pytest.mark.parametrize("section, field", [({"engine": {"engine": "learned"}}, "engine.engine"),
                                            ({"calibration": {"object": "learned"}},
                                             "calibration.object")])  # fmt: skip
def test_an_engine_that_does_not_run_the_modality_is_refused_before_prefect(tmp_path, section,
                                                                            field):
    """Found when the input is read (exit 2, naming the field), not in a tile after the
    server and the cluster started (exit 1)."""
    import yaml
    from typer.testing import CliRunner

    from flows.cli import app
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    cxi = tmp_path / "nf.cxi"
    write_cxi(cxi, simulate("nearfield", frame_size=32, n_positions=9, seed=0))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(section))
    res = CliRunner().invoke(app, ["run", str(cxi), "-o", str(tmp_path / "r.zarr"),
                                   "--config", str(cfg)])  # fmt: skip
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and field in text and "nearfield" in text, res.output


@pytest.mark.parametrize("engine, note", [
    ({"engine": "rpie", "learn_positions": True}, "wavevectors"),  # was ignored
    ({"engine": "rpie", "batch_size": 8}, "batch_size"),  # failed in the tile
    ({"engine": "rpie", "options": {"position_correction": 3}}, "position_correction"),
])  # fmt: skip
def test_engine_settings_the_modality_cannot_take_are_refused_before_prefect(tmp_path, engine,
                                                                             note):
    import yaml
    from typer.testing import CliRunner

    from flows.cli import app
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    cxi = tmp_path / "fp.cxi"
    write_cxi(cxi, simulate("fourier", image_size=16, upsample=2, na=0.1, na_illum=0.15,
                            seed=0))  # fmt: skip
    if "options" in engine:  # a scanning set for the scanning options
        write_cxi(cxi, simulate("farfield", frame_size=32, n_positions=9, seed=0))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"engine": engine}))
    res = CliRunner().invoke(app, ["run", str(cxi), "-o", str(tmp_path / "r.zarr"),
                                   "--config", str(cfg)])  # fmt: skip
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "engine" in text and note in text, res.output


@pytest.mark.parametrize("engine", ["rnf", "rpie"])
@pytest.mark.parametrize("field, value", [("probe_modes", 3), ("n_slices", 2)])
def test_modes_or_slices_on_fourier_data_are_refused_before_prefect(engine, field, value):
    """RNF's Fourier form has no probe modes and no object slices: it dropped them silently
    (the Fourier PIE refused them, naming its options class only)."""
    from flows.checks import check_runnable
    from flows.params import ConfigError, PipelineParams

    spacing = 1e-6 if field == "n_slices" else None
    engine_params = {"engine": engine, field: value, "slice_thickness": spacing}
    p = PipelineParams(input="fp.cxi", store="r.zarr", engine=engine_params)
    with pytest.raises(ConfigError, match=f"engine.{field}: fourier data .*{engine}"):
        check_runnable(p, "fourier")
    check_runnable(p, "farfield")  # scanning data take them


@pytest.mark.parametrize("calibration, modality, field", [
    ({"pupil_file": "pupil.npy"}, "farfield", "pupil_file"),  # Fourier only
    ({"pupil_file": "p.npy", "pupil_wavelength": 5e-7}, "coded", "pupil_file"),
    ({"surface_reference": "ref.cxi"}, "fourier", "surface_reference"),  # coded only
    ({"pupil_wavelength": 5e-7}, "fourier", "pupil_wavelength"),  # of no pupil_file
    ({"prior_iterations": 30}, "farfield", "prior_iterations"),  # uniform: no prior run
    ({"object": "learned", "prior_iterations": 30}, "farfield", "prior_iterations"),
    ({"object": "rpie", "learned_weights": "layout"}, "farfield", "learned_weights"),
])  # fmt: skip
def test_calibration_files_the_modality_does_not_read_are_refused(calibration, modality,
                                                                  field):
    """Each was ignored without a word with data of another modality, or of another prior."""
    from flows.checks import check_runnable
    from flows.params import ConfigError, PipelineParams

    p = PipelineParams(input="d.cxi", store="r.zarr", calibration=calibration)
    with pytest.raises(ConfigError, match=f"calibration.{field}: .*(not set|{modality} data|"
                       "not read by calibration.object)"):
        check_runnable(p, modality)
    for ok in ({"object": "rpie", "prior_iterations": 30},
               {"object": "learned", "learned_weights": "layout"}):  # each its own prior's
        check_runnable(PipelineParams(input="d.cxi", store="r.zarr", calibration=ok),
                       "farfield")
    check_runnable(PipelineParams(input="d.cxi", store="r.zarr", calibration={
        "pupil_file": "p.npy", "pupil_wavelength": 5e-7}), "fourier")  # its own: fine
    check_runnable(PipelineParams(input="d.cxi", store="r.zarr", calibration={
        "surface_reference": "ref.cxi"}), "coded")  # fmt: skip


def test_position_correction_from_a_config_is_the_refinement():
    """true or a mapping from a YAML config becomes the refinement's options (a bare true
    crashed inside the tile: 'bool' object has no attribute 'start')."""
    from ptytasks.engines.options import PIEOptions, PositionCorrectionOptions

    assert PIEOptions(position_correction=True).position_correction == PositionCorrectionOptions()
    got = PIEOptions(position_correction={"start": 2}).position_correction
    assert got == PositionCorrectionOptions(start=2)
    assert PIEOptions(position_correction=False).position_correction is None


def test_a_long_read_is_announced_before_the_progress_bar(tmp_path, monkeypatch, capsys):
    """Ingest runs before the bar (bad input exits 2 in one line): when reading takes a
    while, the command says what it is reading instead of staying silent."""
    import time

    from flows import runner
    from flows.params import PipelineParams
    from storage.errors import DataError

    def slow_then_bad(params):
        time.sleep(0.3)
        raise DataError(params.input, "frames", "stop here")

    monkeypatch.setattr(runner, "READING_NOTE_S", 0.05)
    monkeypatch.setattr(runner, "ingest_input", slow_then_bad)
    p = PipelineParams.from_mapping({"input": str(tmp_path / "big.cxi"),
                                     "store": str(tmp_path / "r.zarr")})
    with pytest.raises(DataError):
        runner.run_pipeline(p)
    assert "reading " in capsys.readouterr().err
