"""Model probes (ptytasks.physics.probes)."""

from __future__ import annotations

import math

import pytest
import torch

from ptytasks.physics.fft import fft2c
from ptytasks.physics.probes import (
    diffuser_probe,
    electron_probe,
    electron_wavelength,
    gaussian_probe,
    zone_plate_focal_length,
    zone_plate_probe,
)
from ptytasks.physics.propagators import propagate


def test_electron_wavelength():
    assert electron_wavelength(300e3) == pytest.approx(1.9687e-12, rel=5e-5)
    assert electron_wavelength(80e3) == pytest.approx(4.1757e-12, rel=5e-5)
    assert electron_wavelength(200e3) == pytest.approx(2.5079e-12, rel=5e-5)
    with pytest.raises(ValueError):
        electron_wavelength(0)


def width(p, pix):
    """``2 sqrt(<x^2>)`` of the intensity along x (the 1/e^2 radius of a Gaussian)."""
    i = (p.abs() ** 2).double().sum(0)
    n = p.shape[-1]
    x = (torch.arange(n, dtype=torch.float64) - n // 2) * pix
    i = i / i.sum()
    return 2 * float(torch.sqrt((i * x**2).sum() - (i * x).sum() ** 2))


def test_gaussian_waist_and_defocus():
    pix, w0, lam = 1e-6, 6e-6, 500e-9
    p = gaussian_probe((64, 64), pix, w0, dtype=torch.complex128)
    assert p.dtype == torch.complex128
    assert float((p.abs() ** 2).sum()) == pytest.approx(1.0)
    assert width(p, pix) == pytest.approx(w0, rel=1e-3)
    assert torch.argmax(p.abs()).item() == 32 * 64 + 32  # centred at (N//2, N//2)
    zr = math.pi * w0**2 / lam
    pz = gaussian_probe((64, 64), pix, w0, lam, defocus=1.5 * zr)
    assert pz.dtype == torch.complex64
    assert width(pz, pix) == pytest.approx(w0 * math.sqrt(1 + 1.5**2), rel=0.01)
    with pytest.raises(ValueError):
        gaussian_probe((64, 64), pix, w0, defocus=1e-3)


def test_zone_plate_focal_length_and_footprint():
    lam = 1.2398e-10  # 10 keV
    d, dr = 60e-6, 60e-9
    f = zone_plate_focal_length(d, dr, lam)
    assert f == pytest.approx(d * dr / lam) and f == pytest.approx(29.04e-3, rel=1e-3)
    pix, n = 30e-9, 128
    focus = zone_plate_probe((n, n), pix, lam, d, dr, central_stop=0.4)
    dz = 1e-3  # geometric ring outer radius D dz / (2 f) = 1.03 um = 34 px
    ring = zone_plate_probe((n, n), pix, lam, d, dr, defocus=dz, central_stop=0.4,
                            dtype=torch.complex128)
    assert focus.abs().max() > 3 * ring.abs().max()  # the focus is at defocus 0
    r_out = d * dz / (2 * f)
    r_in = 0.4 * r_out
    c = (torch.arange(n, dtype=torch.float64) - n // 2) * pix
    rr = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
    i = ring.abs() ** 2
    inside = float(i[(rr > 0.8 * r_in) & (rr < 1.1 * r_out)].sum())
    assert inside > 0.9, f"only {inside:.3f} of the defocused ring inside its geometric annulus"
    # The central stop darkens the middle of the ring.
    assert float(i[rr < 0.5 * r_in].sum()) < 0.05
    with pytest.raises(ValueError):
        zone_plate_probe((n, n), 2 * dr, lam, d, dr)


def test_electron_probe_aperture_and_defocus():
    n, pix, v, alpha = 64, 0.2e-10, 300e3, 20e-3
    lam = electron_wavelength(v)
    p = electron_probe((n, n), pix, v, alpha, dtype=torch.complex128)
    assert float((p.abs() ** 2).sum()) == pytest.approx(1.0)
    spec = fft2c(p)
    f = (torch.arange(n, dtype=torch.float64) - n // 2) / (n * pix)
    k = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    assert spec[k > alpha / lam].abs().max() < 1e-12
    assert spec[k < 0.9 * alpha / lam].abs().min() > 0
    # Defocus df equals the focused probe propagated by +df (Fresnel, conventions.md).
    df = 40e-10
    p_df = electron_probe((n, n), pix, v, alpha, defocus=df, dtype=torch.complex128)
    prop = propagate(p, pix, lam, df, method="fresnel")
    assert (p_df - prop).abs().max() < 1e-12
    assert (p_df - p).abs().max() > 1e-2 * p.abs().max()
    # Zernike defocus Z4 with coefficient c adds pupil phase c * sqrt(3) (2 rho^2 - 1), the
    # sign of every other Zernike pupil in ptyflow (docs/conventions.md).
    p_z = electron_probe((n, n), pix, v, alpha, aberrations={"Z4": 0.8}, dtype=torch.complex128)
    spec_z = fft2c(torch.fft.ifftshift(p_z))
    spec_0 = fft2c(torch.fft.ifftshift(p))
    inside = k < 0.95 * alpha / lam
    rho = k / (alpha / lam)
    want = torch.polar(torch.ones_like(rho), 0.8 * math.sqrt(3) * (2 * rho**2 - 1))
    got = spec_z * spec_0.conj() / (spec_z.abs() * spec_0.abs()).clamp(min=1e-30)
    assert (got - want)[inside].abs().max() < 1e-6
    p_z = electron_probe((n, n), pix, v, alpha, aberrations={"Z4": 0.8, "Cs": 1e-3})
    assert p_z.dtype == torch.complex64
    # An aperture past the grid's Nyquist frequency (but inside its corners) is refused.
    with pytest.raises(ValueError, match="Nyquist"):
        electron_probe((n, n), 0.6 * lam / alpha, v, alpha)
    with pytest.raises(ValueError):
        electron_probe((n, n), pix, v, alpha, aberrations={"C23": 1.0})


def _centroid(p: torch.Tensor) -> tuple[float, float]:
    """Intensity centroid (pixels) of a probe whose power stays well inside its window."""
    i = p.abs().double() ** 2
    y = torch.arange(p.shape[-2], dtype=torch.float64)[:, None]
    x = torch.arange(p.shape[-1], dtype=torch.float64)[None, :]
    return float((i * y).sum() / i.sum()), float((i * x).sum() / i.sum())


def test_every_probe_sits_at_the_window_centre():
    """Scan positions are window corners and a probe's centre is pixel (N//2, N//2)
    (docs/conventions.md); the electron probe once sat at pixel (0, 0), split over the four
    corners (the blind far-field start then matched nothing: probe error 1.000)."""
    n, v, alpha = 64, 300e3, 20e-3
    lam = electron_wavelength(v)
    pix = lam / (4 * alpha)  # the simulator's pitch: bright-field disc of radius N/4
    for df in (0.0, 22.4 * pix / (2 * alpha)):  # in focus; the simulator's 22.4 px footprint
        p = electron_probe((n, n), pix, v, alpha, defocus=df, dtype=torch.complex128)
        cy, cx = _centroid(p)
        assert abs(cy - n // 2) < 0.5 and abs(cx - n // 2) < 0.5, (df, cy, cx)
    focused = electron_probe((n, n), pix, v, alpha, dtype=torch.complex128)
    assert torch.argmax(focused.abs()).item() == (n // 2) * n + n // 2
    zp = zone_plate_probe((n, n), 50e-9, 1.55e-10, 160e-6, 100e-9, defocus=0.2e-3)
    cy, cx = _centroid(zp)
    assert abs(cy - n // 2) < 0.5 and abs(cx - n // 2) < 0.5, (cy, cx)


def test_diffuser_probe_seeded():
    a = diffuser_probe((48, 48), 1e-6, 500e-9, 2e-4, seed=3, feature_size=3e-6)
    b = diffuser_probe((48, 48), 1e-6, 500e-9, 2e-4, seed=3, feature_size=3e-6)
    c = diffuser_probe((48, 48), 1e-6, 500e-9, 2e-4, seed=4, feature_size=3e-6)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert float((a.abs() ** 2).sum()) == pytest.approx(1.0, rel=1e-5)
    # Structured: the intensity varies strongly (speckle-like contrast).
    i = a.abs() ** 2
    assert float(i.std() / i.mean()) > 0.2
