"""Analytic checks of the free-space propagators (ptytasks.physics.propagators)."""

from __future__ import annotations

import math

import pytest
import torch

from ptytasks.physics.fft import fft2u, freq_grid, ifft2u
from ptytasks.physics.propagators import (
    fraunhofer,
    fresnel_scaling,
    inverse_fraunhofer,
    propagate,
)

PIX = 1e-6  # m
LAM = 500e-9  # m


def band_limited(shape, dtype=torch.complex128, cutoff=0.25, seed=0):
    """Random complex field whose spectrum is zero beyond ``cutoff`` cycles/pixel."""
    g = torch.Generator().manual_seed(seed)
    spec = torch.randn(*shape, generator=g, dtype=torch.complex128)
    fy, fx = freq_grid(shape, 1.0, dtype=torch.float64)
    spec = spec * ((fy**2 + fx**2) < cutoff**2)
    return ifft2u(spec).to(dtype)


def energy(x):
    return float((x.real**2 + x.imag**2).sum())


@pytest.mark.parametrize("dtype,tol", [(torch.complex64, 1e-5), (torch.complex128, 1e-12)])
@pytest.mark.parametrize("kind", ["fraunhofer", "angular_spectrum", "fresnel"])
def test_parseval(kind, dtype, tol):
    u = band_limited((48, 40), dtype)
    if kind == "fraunhofer":
        v = fraunhofer(u)
    else:
        v = propagate(u, PIX, LAM, 3e-4, method=kind)
    rel = abs(energy(v) - energy(u)) / energy(u)
    assert rel < tol, f"{kind}: energy changed by {rel:.2e}"
    # Not the identity: the propagation actually did something.
    assert (v - u).abs().max() > 1e-2 * u.abs().max()


def test_fraunhofer_centred_and_inverse():
    u = band_limited((32, 32))
    v = fraunhofer(u)
    # Zero frequency (the field's sum / N) sits at (N//2, N//2).
    assert torch.allclose(v[16, 16], u.sum() / 32, atol=1e-12)
    assert torch.allclose(inverse_fraunhofer(v), u, atol=1e-12)


@pytest.mark.parametrize("method", ["angular_spectrum", "fresnel"])
@pytest.mark.parametrize("dtype,tol", [(torch.complex64, 1e-5), (torch.complex128, 1e-10)])
def test_round_trip(method, dtype, tol):
    u = band_limited((64, 64), dtype)
    back = propagate(propagate(u, PIX, LAM, 5e-4, method=method), PIX, LAM, -5e-4, method=method)
    rel = float(torch.linalg.vector_norm(back - u) / torch.linalg.vector_norm(u))
    assert rel < tol, f"{method} {dtype}: round-trip error {rel:.2e}"


def test_angular_spectrum_drops_evanescent():
    # lambda > 2 pixels puts the grid's high frequencies beyond 1/lambda.
    u = band_limited((32, 32), cutoff=0.7)
    v = propagate(u, PIX, 3 * PIX, 1e-6)
    fy, fx = freq_grid((32, 32), PIX, dtype=torch.float64)
    evanescent = (3 * PIX) ** 2 * (fy**2 + fx**2) >= 1
    assert evanescent.any()
    assert fft2u(v)[evanescent].abs().max() < 1e-12


def test_propagation_sign():
    # A converging paraxial spherical wave exp(-i pi r^2 / (lambda f)) focuses at +f.
    n, f = 128, 2e-3
    y = (torch.arange(n, dtype=torch.float64) - n // 2) * PIX
    r2 = y[:, None] ** 2 + y[None, :] ** 2
    lens = torch.polar(torch.ones_like(r2), -math.pi * r2 / (LAM * f))
    u = torch.exp(-r2 / (30 * PIX) ** 2) * lens
    peak = [float(propagate(u, PIX, LAM, z).abs().max()) for z in (-f, f)]
    assert peak[1] > 3 * peak[0]


def second_moment_width(field, pix):
    """``w = 2 sqrt(<x^2>)`` of the intensity (equal to the 1/e^2 radius of a Gaussian)."""
    i = field.real**2 + field.imag**2
    n = field.shape[-1]
    x = (torch.arange(n, dtype=torch.float64) - n // 2) * pix
    ix = i.sum(0)
    ix = ix / ix.sum()
    return 2 * float(torch.sqrt((ix * x**2).sum() - (ix * x).sum() ** 2))


@pytest.mark.parametrize("method", ["fresnel", "angular_spectrum"])
@pytest.mark.parametrize("z_over_zr", [0.5, 1.0, 2.5])
def test_gaussian_beam_width(method, z_over_zr):
    n, w0 = 128, 8 * PIX
    zr = math.pi * w0**2 / LAM
    y = (torch.arange(n, dtype=torch.float64) - n // 2) * PIX
    u = torch.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / w0**2).to(torch.complex128)
    assert abs(second_moment_width(u, PIX) / w0 - 1) < 1e-3
    z = z_over_zr * zr
    w = second_moment_width(propagate(u, PIX, LAM, z, method=method), PIX)
    expected = w0 * math.sqrt(1 + (z / zr) ** 2)
    assert abs(w / expected - 1) < 0.01, f"w={w:.4e}, expected {expected:.4e}"


def test_fresnel_scaling_p25_numbers():
    s = fresnel_scaling(3.65e-3, 1.12, 55e-6)
    assert s["magnification"] == pytest.approx(307.85, rel=1e-4)
    assert s["effective_pixel"] == pytest.approx(178.7e-9, rel=1e-3)
    assert s["effective_distance"] == pytest.approx(3.638e-3, rel=1e-3)
    with pytest.raises(ValueError):
        fresnel_scaling(0.0, 1.0, 55e-6)


def test_fresnel_scaling_theorem_numerically():
    """Cone beam (point source at z1, detector at z1 + z2) == plane wave at z2/M, scaled."""
    n, z1, z2 = 256, 5e-4, 5e-4
    s = fresnel_scaling(z1, z2, PIX)
    m = s["magnification"]

    def obj(pitch):
        c = (torch.arange(n, dtype=torch.float64) - n // 2) * pitch
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        env = torch.exp(-(yy**2 + xx**2) / (15 * PIX) ** 2)
        blob = torch.exp(-((yy - 4 * PIX) ** 2 + (xx + 3 * PIX) ** 2) / (4 * PIX) ** 2)
        return env * torch.polar(torch.exp(-0.3 * blob), 1.5 * blob), yy**2 + xx**2

    # Cone beam: detector sampled at the physical pitch PIX (sample plane uses PIX too).
    o, r2 = obj(PIX)
    sph = torch.polar(torch.ones_like(r2), math.pi * r2 / (LAM * z1))
    cone = propagate(o * sph, PIX, LAM, z2, method="fresnel")
    # Plane wave: object sampled at PIX / M, propagated by the effective distance.
    o_eff, _ = obj(s["effective_pixel"])
    plane = propagate(o_eff, s["effective_pixel"], LAM, s["effective_distance"], method="fresnel")
    i_cone = cone.abs() ** 2

    def mismatch(i_plane):
        return float(torch.linalg.vector_norm(i_cone - i_plane) / torch.linalg.vector_norm(i_cone))

    rel = mismatch(plane.abs() ** 2 / m**2)
    assert rel < 1e-3, f"Fresnel scaling mismatch {rel:.2e}"
    # Teeth: a 10 % wrong effective distance is clearly detected.
    z_wrong = 1.1 * s["effective_distance"]
    wrong = propagate(o_eff, s["effective_pixel"], LAM, z_wrong, method="fresnel")
    assert mismatch(wrong.abs() ** 2 / m**2) > 10 * max(rel, 1e-4)
