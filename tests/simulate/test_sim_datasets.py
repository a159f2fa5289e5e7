"""Simulated datasets: shapes, physical metadata, exact noise-free frames, noise, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptytasks.data import PtychoData
from ptytasks.modalities import model_for, names
from ptytasks.simulate import simulate

MODALITIES = names()

# Small, fast settings per modality (each simulates in well under a second).
SMALL = {
    "farfield": dict(frame_size=32, n_positions=30),
    "nearfield": dict(frame_size=48, n_positions=9),
    "coded": dict(frame_size=32, n_positions=9),
    "fourier": dict(image_size=24, upsample=4, na_illum=0.25),
}


def _sim(modality, **kw) -> PtychoData:
    return simulate(modality, **{**SMALL[modality], **kw})


def _model_frames(data: PtychoData, model=None) -> np.ndarray:
    model = model or model_for(data, truth=True)
    gt = data.ground_truth
    with torch.no_grad():
        out = model(
            torch.from_numpy(gt["object"]), torch.from_numpy(gt["probe"]),
            torch.arange(data.n_frames),
        )
    return out.numpy()


@pytest.fixture(scope="module")
def clean() -> dict[str, PtychoData]:
    return {m: _sim(m, seed=1) for m in MODALITIES}


@pytest.mark.parametrize("modality", MODALITIES)
def test_shapes_dtypes_and_metadata(clean, modality):
    from storage.validate import validate_data

    d = clean[modality]
    assert d.modality == modality
    n = d.n_frames
    assert d.frames.dtype == np.float32 and d.frames.ndim == 3 and n > 4
    assert d.frames.min() >= 0
    gt = d.ground_truth
    assert gt["object"].dtype == np.complex64 and gt["object"].shape == d.object_shape
    assert gt["probe"].dtype == np.complex64
    assert 1e-13 < d.wavelength < 1e-5 and 1e-12 < d.pixel_size < 1e-2
    if modality == "fourier":
        assert d.positions_px is None
        assert d.wavevectors.shape == (n, 2) and d.wavevectors.dtype == np.float64
        np.testing.assert_array_equal(d.wavevectors, gt["wavevectors"])
        assert gt["pupil"].shape == d.frame_shape
        up = int(d.params["upsample"])
        assert d.object_shape == (up * d.frame_shape[0], up * d.frame_shape[1])
        assert d.pixel_size == pytest.approx(d.detector_pixel / d.params["magnification"] / up)
    else:
        assert d.positions_px.shape == (n, 2) and d.positions_px.dtype == np.float64
        np.testing.assert_array_equal(d.positions_px, gt["positions_px"])
        assert gt["probe"].shape == d.frame_shape
        assert d.distance > 0
    if modality == "farfield":  # object pixel = lambda z / (N dp)
        n_det = d.frame_shape[0]
        want = d.wavelength * d.distance / (n_det * d.detector_pixel)
        assert d.pixel_size == pytest.approx(want, abs=0)
    if modality == "nearfield":  # Fresnel scaling: effective pixel and distance
        z1, z2, mag = d.params["z1"], d.params["z2"], d.params["magnification"]
        assert mag == pytest.approx((z1 + z2) / z1)
        assert d.pixel_size == pytest.approx(d.detector_pixel / mag)
        assert d.distance == pytest.approx(z2 / mag)
    if modality == "coded":
        assert gt["surface"].shape == d.frame_shape and "surface_distance" in d.params
    validate_data(d)  # what every reader and the run store check


@pytest.mark.parametrize("modality", MODALITIES)
def test_noise_free_frames_equal_the_model(clean, modality):
    d = clean[modality]
    np.testing.assert_allclose(d.frames, _model_frames(d), rtol=1e-5, atol=1e-3)


def test_farfield_frames_equal_an_independently_built_model(clean):
    from ptytasks.physics.models.farfield import FarField

    d = clean["farfield"]
    gt = d.ground_truth
    model = FarField(gt["positions_px"], d.object_shape, d.frame_shape)
    np.testing.assert_allclose(d.frames, _model_frames(d, model), rtol=1e-5, atol=1e-3)
    # Unitary FFT: each frame's counts are the exit-wave energy, at most the probe flux.
    assert d.frames.sum((1, 2)).max() <= np.sum(np.abs(gt["probe"]) ** 2) * 1.0001


@pytest.mark.parametrize("modality", MODALITIES)
def test_poisson_noise_at_the_dose(modality):
    dose = 2e4
    d = _sim(modality, dose=dose, seed=3)
    assert np.array_equal(d.frames, np.round(d.frames)), "counts are integers"
    probe = d.ground_truth["probe"]
    incident = np.sum(np.abs(probe) ** 2)
    if modality == "fourier":  # plane wave over the field of view: dose per low-res image
        incident *= (d.frame_shape[0] * d.frame_shape[1]) / probe.size
    assert incident == pytest.approx(dose, rel=1e-4)
    expected = _model_frames(d).astype(np.float64)
    total = expected.sum()
    assert d.frames.sum() == pytest.approx(total, abs=5 * math.sqrt(total))
    # Poisson: the variance equals the mean.
    resid = (d.frames - expected) ** 2
    assert resid.sum() / total == pytest.approx(1.0, abs=0.05)


def test_dose_per_pixel_and_bad_dose():
    d = _sim("farfield", dose=3.0, dose_unit="pixel")
    assert d.meta["flux_per_frame"] == pytest.approx(3.0 * 32 * 32)
    with pytest.raises(ValueError, match="dose"):
        _sim("farfield", dose=-1.0)


@pytest.mark.parametrize("modality", ["farfield", "nearfield", "coded"])
def test_position_errors_have_the_requested_rms(modality):
    d = _sim(modality, position_error_px=1.7, seed=5)
    err = d.positions_px - d.ground_truth["positions_px"]
    assert math.sqrt((err**2).sum(1).mean()) == pytest.approx(1.7, rel=1e-9)
    np.testing.assert_allclose(err.mean(0), 0.0, atol=1e-9)
    # The frames are still those of the TRUE positions.
    np.testing.assert_allclose(d.frames, _model_frames(d), rtol=1e-5, atol=1e-3)


def test_scale_distance_and_wavelength_errors_farfield():
    t = _sim("farfield", seed=2)
    d = _sim("farfield", seed=2, position_scale_error=0.02, distance_error=0.01,
             wavelength_error=-0.005)
    gt = d.ground_truth
    assert d.distance == pytest.approx(float(gt["distance"]) * 1.01)
    assert d.wavelength == pytest.approx(float(gt["wavelength"]) * 0.995, abs=0)
    # A reader converts stage metres with the nominal pixel: positions scale by px_true/px_nom.
    scale = 1.02 * float(gt["pixel_size"]) / d.pixel_size
    c_nom = d.positions_px - d.positions_px.mean(0)
    c_true = gt["positions_px"] - gt["positions_px"].mean(0)
    np.testing.assert_allclose(c_nom, c_true * scale, atol=1e-9)
    # The measurement is unchanged (the object is only padded for the nominal windows).
    np.testing.assert_allclose(d.frames, t.frames, rtol=1e-4, atol=1e-2)
    assert d.object_shape >= t.object_shape


def test_nearfield_and_coded_distance_errors():
    n = _sim("nearfield", distance_error=0.03)
    assert n.distance == pytest.approx(float(n.ground_truth["distance"]) * 1.03)
    assert n.distance == pytest.approx(n.params["z2"] / n.params["magnification"])
    c = _sim("coded", distance_error=-0.1, wavelength_error=0.01)
    assert c.distance == pytest.approx(float(c.ground_truth["distance"]) * 0.9)
    assert c.wavelength == pytest.approx(float(c.ground_truth["wavelength"]) * 1.01, abs=0)
    np.testing.assert_array_equal(c.meta["surface"], c.ground_truth["surface"])


def test_fourier_errors_and_aberrations():
    d = _sim("fourier", wavelength_error=0.02, position_scale_error=0.01, defocus_error=5e-6,
             aberrations={5: 0.7, 8: -0.4})
    gt = d.ground_truth
    np.testing.assert_allclose(d.wavevectors, gt["wavevectors"] * 1.01 / 1.02, rtol=1e-12)
    assert d.distance == pytest.approx(5e-6) and float(gt["distance"]) == 0.0
    assert gt["zernike"][4] == 0.7 and gt["zernike"][7] == -0.4
    inside = np.abs(gt["pupil"]) > 0
    assert np.ptp(np.angle(gt["pupil"][inside])) > 0.5
    np.testing.assert_allclose(d.frames, _model_frames(d), rtol=1e-5, atol=1e-3)
    e = _sim("fourier", position_error_px=0.8, seed=4)
    k_to_px = d.object_shape[0] * d.pixel_size
    err = (e.wavevectors - e.ground_truth["wavevectors"]) * k_to_px
    assert math.sqrt((err**2).sum(1).mean()) == pytest.approx(0.8, rel=1e-9)


def test_fourier_rejects_an_undersampled_object_grid():
    with pytest.raises(ValueError, match="increase upsample"):
        _sim("fourier", upsample=2, na_illum=0.5)


def test_seed_determinism_and_probe_kinds():
    a = _sim("farfield", seed=7, dose=1e4)
    np.testing.assert_array_equal(a.frames, _sim("farfield", seed=7, dose=1e4).frames)
    assert not np.array_equal(a.frames, _sim("farfield", seed=8, dose=1e4).frames)
    g = _sim("farfield", probe="gaussian", known_probe=True)
    np.testing.assert_array_equal(g.probe, g.ground_truth["probe"])
    e = _sim("farfield", probe="electron")
    assert e.wavelength == pytest.approx(1.9687e-12, rel=1e-3)  # 300 kV
    with pytest.raises(ValueError, match="unknown far-field probe"):
        _sim("farfield", probe="laser")


def test_dispatch_errors():
    with pytest.raises(ValueError, match="unknown modality 'xray'"):
        simulate("xray")
    with pytest.raises(TypeError):
        simulate("fourier", n_positions=10)  # LED count comes from na_illum and overlap
    d = simulate("fourier", frame_size=16, na_illum=0.15)  # alias of image_size
    assert d.frame_shape == (16, 16) and d.object_shape == (64, 64)


def test_thick_specimens_have_different_slices():
    """Slices are different objects: a fixed picture (the default camera) is refused for
    them, and no random slice's amplitude is another slice's phase (dead leaves drew its
    amplitude with seed + 1, the next slice's phase seed)."""
    kw = {"frame_size": 16, "n_positions": 4, "n_slices": 3, "slice_distance": 5e-9, "seed": 0}
    with pytest.raises(ValueError, match="one fixed picture"):
        simulate("farfield", object_kind="camera", **kw)
    o = simulate("farfield", object_kind="dead_leaves", **kw).ground_truth["object"]
    for a in range(3):
        for b in range(3):
            r = np.corrcoef(np.abs(o[a]).ravel(), np.angle(o[b]).ravel())[0, 1]
            assert a == b or abs(r) < 0.5, (a, b, r)


def test_a_subset_keeps_its_own_frames_truth():
    """The truth's per-frame entries follow the frames (the true model of a subset paired
    frame i with the parent's frame i: 33 % error); kept_indices count the original scan's
    frames through a subset of a subset."""
    d = simulate("farfield", frame_size=32, n_positions=12, seed=1, dose=None)
    sub = d.subset(np.array([3, 7, 9]))
    np.testing.assert_array_equal(sub.ground_truth["positions_px"],
                                  d.ground_truth["positions_px"][[3, 7, 9]])
    model = model_for(sub, truth=True, dtype=torch.float64)
    gt = sub.ground_truth
    pred = model(torch.as_tensor(gt["object"]).to(torch.complex128),
                 torch.as_tensor(gt["probe"]).to(torch.complex128), torch.arange(3)).numpy()
    assert np.abs(pred - sub.frames).sum() / np.abs(sub.frames).sum() < 1e-5
    assert sub.subset(np.array([2, 0])).meta["kept_indices"].tolist() == [9, 3]
    f = simulate("fourier", image_size=12, upsample=2, na=0.1, na_illum=0.15, seed=0)
    np.testing.assert_array_equal(f.subset(np.array([1, 2])).ground_truth["wavevectors"],
                                  f.ground_truth["wavevectors"][[1, 2]])


def test_an_electron_file_with_a_wavelength_error_states_the_nominal_voltage():
    """The file's voltage gives its nominal wavelength (it kept the true voltage, so the
    file contradicted itself); the voltage inverts the wavelength exactly."""
    from ptytasks.physics.probes import electron_voltage, electron_wavelength

    assert electron_voltage(electron_wavelength(300e3)) == pytest.approx(300e3, rel=1e-12)
    d = simulate("farfield", probe="electron", object_kind="lattice", frame_size=32,
                 n_positions=9, seed=0, wavelength_error=0.02)
    assert electron_wavelength(d.params["voltage"]) == pytest.approx(d.wavelength, rel=1e-9, abs=0)
