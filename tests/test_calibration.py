"""Priors: physical probes, Zernike fit of a pupil, coded-surface calibration."""

import numpy as np
import torch

from ptytasks.calibration import (
    fit_zernike,
    physical_probe,
    probe_prior,
    pupil_prior,
    surface_from_reference,
)
from ptytasks.metrics import complex_error
from ptytasks.physics.zernike import zernike_basis


def test_fit_zernike_recovers_wrapped_aberrations():
    basis = zernike_basis((96, 96), 30.0, 15, dtype=torch.float64).numpy()
    coef = np.zeros(15)
    coef[[3, 4, 5, 6, 7]] = [6.0, 1.5, -2.0, 0.8, -1.1]  # defocus of ~1 wave, astig, coma
    support = basis[0] > 0
    pupil = support * np.exp(1j * np.tensordot(coef, basis, 1))
    fit = fit_zernike(pupil, 15)
    assert np.abs(fit[1:] - coef[1:]).max() < 0.02  # rad; the discrete disk limits it


def test_pupil_prior_transfers_measured_aberrations():
    from ptytasks.simulate import simulate

    d = simulate("fourier", aberrations={4: 1.0, 5: 0.5, 8: -0.4}, seed=0)
    true = d.ground_truth["pupil"]
    pupil, coef = pupil_prior(d, true, measured_wavelength=d.wavelength)
    ap = np.abs(true) > 0
    err = np.angle(pupil[ap] * np.conj(true[ap]))
    err -= err.mean()
    assert np.sqrt(np.mean(err**2)) < 0.02
    # Twice the wavelength: the same path difference is half the phase.
    _, half = pupil_prior(d, true, measured_wavelength=d.wavelength / 2)
    assert np.allclose(half, coef / 2)


def test_physical_probe_zone_plate_and_errors():
    from ptytasks.simulate import simulate

    d = simulate("farfield", n_positions=16, seed=0)
    d.params.update(zp_diameter=160e-6, zp_outer_zone=100e-9, defocus=0.3e-3)
    p = physical_probe(d)
    assert p.shape == d.frame_shape and p.dtype == np.complex64
    assert np.isclose(np.sum(np.abs(p) ** 2), np.mean(d.frames.sum((1, 2))), rtol=1e-4)
    d.params.clear()
    try:
        probe_prior(d, "physical")
    except ValueError as exc:
        assert "zp_diameter" in str(exc)
    else:
        raise AssertionError("missing beam parameters must raise")


def test_physical_probe_electron_matches_the_simulated_beam():
    """The electron branch: the simulator's beam from its parameters, Cs included (the key
    once reached ``electron_probe`` as ``"cs"`` and raised), centred in the window."""
    from ptytasks.simulate import simulate

    d = simulate("farfield", probe="electron", n_positions=16, seed=0)
    alpha = 0.02  # the simulator's semi-angle; its footprint is 0.35 N = 22.4 px
    d.params.update(convergence_semiangle=alpha, defocus=22.4 * d.pixel_size / (2 * alpha),
                    cs=0.0)  # fmt: skip
    true = np.asarray(d.ground_truth["probe"])
    assert complex_error(physical_probe(d), true, align=False) < 1e-3
    d.params["cs"] = 1e-3  # 1 mm of spherical aberration changes the beam
    assert complex_error(physical_probe(d), true, align=False) > 0.05


def test_surface_calibration_from_known_reference():
    from ptytasks.simulate import simulate

    d = simulate("coded", n_positions=25, frame_size=48, seed=2)
    truth = d.ground_truth["surface"]
    est = surface_from_reference(d, d.ground_truth["object"], iterations=200)
    start = complex_error(np.ones_like(truth), truth, align=False)
    err = complex_error(est, truth, align=False)
    assert start > 0.9 and err < 0.1, (err, start)  # measured: 0.96 -> 0.056
