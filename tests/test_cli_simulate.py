"""`ptyflow simulate`: a CXI per modality that storage.cxi.read_cxi reads back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from ptytasks.modalities import names

MODALITIES = names()

runner = CliRunner()
SMALL = ["--frame-size", "24"]
EXTRA = {
    "farfield": ["--n-positions", "12", "--scan", "raster", "--position-error", "0.5"],
    "nearfield": ["--n-positions", "6"],
    "coded": ["--n-positions", "6", "--distance-error", "0.02"],
    "fourier": ["--na-illum", "0.2", "--defocus-error", "1e-6"],
}
KWARGS = {  # the same settings as simulate() keywords
    "farfield": dict(frame_size=24, n_positions=12, scan="raster", position_error_px=0.5),
    "nearfield": dict(frame_size=24, n_positions=6),
    "coded": dict(frame_size=24, n_positions=6, distance_error=0.02),
    "fourier": dict(image_size=24, na_illum=0.2, defocus_error=1e-6),
}


def test_help_lists_simulate():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0, res.output
    assert "simulate" in res.output
    res = runner.invoke(app, ["simulate", "--help"])
    assert res.exit_code == 0 and "--modality" in res.output


@pytest.mark.parametrize("modality", MODALITIES)
def test_simulate_writes_a_cxi_that_reads_back(tmp_path, modality):
    from ptytasks.simulate import simulate
    from storage.cxi import read_cxi

    out = tmp_path / f"{modality}.cxi"
    args = ["simulate", "--modality", modality, "--out", str(out), "--seed", "4", "--dose", "1e4"]
    res = runner.invoke(app, args + SMALL + EXTRA[modality])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output

    ref = simulate(modality, seed=4, dose=1e4, **KWARGS[modality])
    d = read_cxi(out)
    assert d.modality == modality
    np.testing.assert_array_equal(d.frames, ref.frames)
    assert d.wavelength == pytest.approx(ref.wavelength, rel=1e-12, abs=0)
    assert d.pixel_size == pytest.approx(ref.pixel_size, rel=1e-12, abs=0)
    assert d.object_shape == ref.object_shape
    if ref.distance is not None:
        assert d.distance == pytest.approx(ref.distance, rel=1e-12, abs=0)
    for key, value in ref.params.items():
        assert d.params[key] == pytest.approx(value, rel=1e-12, abs=0)
    gt, rgt = d.ground_truth, ref.ground_truth
    assert gt["object"].dtype == np.complex64
    np.testing.assert_array_equal(gt["object"], rgt["object"])
    np.testing.assert_array_equal(gt["probe"], rgt["probe"])
    if modality == "fourier":
        np.testing.assert_array_equal(d.wavevectors, ref.wavevectors)
        np.testing.assert_array_equal(gt["wavevectors"], rgt["wavevectors"])
        np.testing.assert_array_equal(gt["pupil"], rgt["pupil"])
    else:
        np.testing.assert_array_equal(d.positions_px, ref.positions_px)
        np.testing.assert_array_equal(gt["positions_px"], rgt["positions_px"])
    if modality == "coded":
        np.testing.assert_array_equal(gt["surface"], rgt["surface"])
        np.testing.assert_array_equal(d.meta["surface"], ref.meta["surface"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "farfield", "-o", "{tmp}/a.npz"], "must end in .cxi"),
        (["-m", "farfield", "-o", "{tmp}/a.cxi", "--overlap", "1.5"], "--overlap"),
        (["-m", "farfield", "-o", "{tmp}/a.cxi", "--dose", "-3"], "--dose"),
        (["-m", "fourier", "-o", "{tmp}/a.cxi", "--scan", "raster"], "does not apply to fourier"),
        (["-m", "coded", "-o", "{tmp}/a.cxi", "--object", "nope"], "--object"),
        (["-m", "xray", "-o", "{tmp}/a.cxi"], "xray"),
        (["-m", "fourier", "-o", "{tmp}/a.cxi", "--na-illum", "0.95"], "increase upsample"),
        (["-m", "farfield", "-o", "{tmp}/missing/a.cxi"], "does not exist"),
        (["-m", "farfield", "-o", "{tmp}/a.cxi", "--frame-size", "0"], "--frame-size"),
        (["-m", "farfield", "-o", "{tmp}/a.cxi", "--wavelength-error", "-1"],
         "--wavelength-error: must be > -1"),
        (["-m", "coded", "-o", "{tmp}/a.cxi", "--distance-error", "-1"],
         "--distance-error: must be > -1"),
        (["-m", "farfield", "-o", "{tmp}/a.cxi", "--position-scale-error", "-1"],
         "--position-scale-error: must be > -1"),
        (["-m", "fourier", "-o", "{tmp}/a.cxi", "--upsample", "0"], "--upsample"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path, args, message):
    argv = ["simulate"] + [a.format(tmp=tmp_path) for a in args]
    res = runner.invoke(app, argv)
    assert res.exit_code == 2, res.output
    # Rich wraps the message in a box: drop the frame characters and re-join the words.
    text = " ".join(res.output.replace("│", " ").split())
    assert message in text, res.output


def test_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "x.cxi"
    out.write_bytes(b"old")
    argv = ["simulate", "-m", "coded", "-o", str(out), "--frame-size", "16", "--n-positions", "4"]
    res = runner.invoke(app, argv)
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, argv + ["--force"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:4] == b"\x89HDF"


def test_simulate_mixed_state_probe(tmp_path):
    from ptytasks.physics.modes import power_fractions
    from storage.cxi import read_cxi

    out = tmp_path / "m.cxi"
    base = ["simulate", "-m", "farfield", "-o", str(out), *SMALL, "--n-positions", "9"]
    res = runner.invoke(app, [*base, "--mode-fractions", "0.7,0.3"])
    assert res.exit_code == 0, res.output
    import torch

    truth = read_cxi(out).ground_truth["probe"]
    assert truth.shape == (2, 24, 24)
    assert np.allclose(power_fractions(torch.as_tensor(truth)).numpy(), [0.7, 0.3], atol=1e-4)
    for bad in ("0.7,0.2", "a,b", "-0.5,1.5"):
        res = runner.invoke(app, [*base, "--force", "--mode-fractions", bad])
        assert res.exit_code == 2 and "--mode-fractions" in res.output, res.output
    res = runner.invoke(app, ["simulate", "-m", "fourier", "-o", str(tmp_path / "f.cxi"),
                              "--mode-fractions", "0.7,0.3"])  # fmt: skip
    assert res.exit_code == 2 and "does not apply to fourier" in res.output, res.output
