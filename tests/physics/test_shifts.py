"""Sub-pixel shifts and patch extraction/insertion (ptytasks.physics.shifts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptytasks.physics.shifts import coverage, extract_patches, fourier_shift, insert_patches


def trig_field(shape, shift=(0.0, 0.0)):
    """A band-limited periodic field (integer frequencies) evaluated at ``r - shift``."""
    ny, nx = shape
    y = torch.arange(ny, dtype=torch.float64)[:, None] - shift[0]
    x = torch.arange(nx, dtype=torch.float64)[None, :] - shift[1]
    terms = [(1.0, 1, 2, 0.3), (0.5, 3, -1, 1.1), (0.25, -2, 5, -0.7)]  # amp, ky, kx, phase
    out = torch.zeros(ny, nx, dtype=torch.complex128)
    for a, ky, kx, ph in terms:
        arg = 2 * math.pi * (ky * y / ny + kx * x / nx) + ph
        out = out + a * torch.polar(torch.ones_like(arg), arg)
    return out


@pytest.mark.parametrize("d", [(0.3, -0.45), (1.7, 2.25), (-3.1, 0.6)])
def test_subpixel_shift_matches_analytic(d):
    shape = (24, 20)
    out = fourier_shift(trig_field(shape), torch.tensor(d, dtype=torch.float64))
    err = (out - trig_field(shape, d)).abs().max()
    assert err < 1e-12, f"shift {d}: error {err:.2e}"


def test_shift_of_plane_wave_is_phase_factor():
    n, k, d = 32, (3, -5), (0.37, 1.21)
    r = torch.arange(n, dtype=torch.float64)
    arg = 2 * math.pi * (k[0] * r[:, None] + k[1] * r[None, :]) / n
    wave = torch.polar(torch.ones_like(arg), arg)
    out = fourier_shift(wave, torch.tensor(d, dtype=torch.float64))
    phase = torch.tensor(-2 * math.pi * (k[0] * d[0] + k[1] * d[1]) / n, dtype=torch.float64)
    factor = torch.polar(torch.ones_like(phase), phase)
    assert (out - wave * factor).abs().max() < 1e-12


def test_gaussian_shift_and_sign():
    # Content moves to larger indices for a positive shift (docs/conventions.md).
    n = 32
    r = torch.arange(n, dtype=torch.float64)
    g = lambda c: torch.exp(-((r[:, None] - c[0]) ** 2 + (r[None, :] - c[1]) ** 2) / 9.0)
    out = fourier_shift(g((12.0, 14.0)), torch.tensor([2.5, -1.25], dtype=torch.float64))
    assert out.dtype == torch.float64
    assert (out - g((14.5, 12.75))).abs().max() < 1e-6
    assert torch.allclose(
        fourier_shift(g((12.0, 14.0)), torch.tensor([3.0, 2.0], dtype=torch.float64)),
        torch.roll(g((12.0, 14.0)), (3, 2), (0, 1)),
        atol=1e-12,
    )


def test_extract_integer_positions_equal_slicing():
    obj = torch.randn(20, 18, dtype=torch.complex128)
    pos = torch.tensor([[0.0, 0.0], [3.0, 7.0], [12.0, 10.0]], dtype=torch.float64)
    patches = extract_patches(obj, pos, (8, 8))
    for p, (py, px) in zip(patches, pos.long().tolist(), strict=True):
        assert torch.allclose(p, obj[py : py + 8, px : px + 8], atol=1e-12)
    # Leading object dims (slices) are kept after the frame dim.
    stack = torch.stack([obj, 2 * obj])
    assert torch.allclose(extract_patches(stack, pos, (8, 8))[:, 1], 2 * patches, atol=1e-12)


def test_extract_subpixel_matches_shifted_object():
    # A smooth blob well inside the window: patch[r] = O(p + r) to interpolation accuracy.
    r = torch.arange(32, dtype=torch.float64)
    g = lambda c: torch.exp(-((r[:, None] - c[0]) ** 2 + (r[None, :] - c[1]) ** 2) / 6.0)
    obj = g((14.0, 16.0)).to(torch.complex128)
    patch = extract_patches(obj, torch.tensor([[4.3, 6.6]], dtype=torch.float64), (20, 20))
    exact = g((14.0 - 4.3, 16.0 - 6.6))[:20, :20]
    assert (patch[0] - exact).abs().max() < 1e-5
    # With a window equal to the object the (periodic) shift is exact.
    obj = trig_field((24, 24))
    full = extract_patches(obj, torch.tensor([[0.3, 0.6]], dtype=torch.float64), (24, 24))
    assert (full[0] - trig_field((24, 24), (-0.3, -0.6))).abs().max() < 1e-12


@pytest.mark.parametrize("subpixel", [True, False])
def test_extract_insert_adjoint(subpixel):
    g = torch.Generator().manual_seed(1)
    obj = torch.randn(16, 20, dtype=torch.complex128, generator=g)
    pos = torch.tensor([[0.2, 1.7], [5.5, 3.25], [7.9, 11.4]], dtype=torch.float64)
    pat = torch.randn(3, 8, 8, dtype=torch.complex128, generator=g)
    for spectrum in (False, True):  # spectrum windows (Fourier ptychography) too
        kw = {"subpixel": subpixel, "spectrum": spectrum}
        lhs = torch.vdot(extract_patches(obj, pos, (8, 8), **kw).flatten(), pat.flatten())
        rhs = torch.vdot(obj.flatten(), insert_patches(pat, pos, (16, 20), **kw).flatten())
        assert abs(lhs - rhs) < 1e-10 * abs(lhs), spectrum


@pytest.mark.parametrize("bad", [[-0.5, 2.0], [2.0, -1.0], [9.0, 0.0], [0.0, 13.0]])
def test_out_of_bounds_raises(bad):
    obj = torch.zeros(16, 20, dtype=torch.complex64)
    with pytest.raises(ValueError, match="outside"):
        extract_patches(obj, torch.tensor([[1.0, 1.0], bad]), (8, 8))
    with pytest.raises(ValueError, match="outside"):
        insert_patches(torch.zeros(2, 8, 8), torch.tensor([[1.0, 1.0], bad]), (16, 20))


def test_coverage_counts_windows():
    pos = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    c = coverage(pos, (4, 4), (8, 8))
    assert c.sum() == 32 and c[2, 2] == 2 and c[0, 0] == 1 and c[7, 7] == 0


def test_positions_get_gradients():
    obj = trig_field((16, 16))
    pos = torch.tensor([[3.4, 2.6]], dtype=torch.float64, requires_grad=True)
    extract_patches(obj, pos, (8, 8)).abs().pow(2).sum().backward()
    assert pos.grad is not None and pos.grad.abs().sum() > 0


@pytest.mark.parametrize("frac", [(0.0, 0.4), (0.3, -0.2)])
def test_fractional_spectrum_window_is_the_tilted_objects_image(frac):
    """Fourier ptychography: a window cut from the object's centred spectrum at a
    fractional corner ``c + d`` must be the low-resolution image of the object tilted by
    ``exp(-2 pi i d . r / M)`` (``r`` the object pixel, origin at pixel 0 as ``fft2c``
    has it): a smooth ramp over the image, wrapping at its edge. With ``fftfreq`` ramps
    the wrap fell at the image centre, a ``2 pi d`` phase step through every tilted image
    (relative error ~1 here)."""
    from ptytasks.physics.fft import fft2c, ifft2c

    M, m = 192, 48
    y, x = np.mgrid[:M, :M]
    rng = np.random.default_rng(0)
    env = np.exp(-((x - M / 2) ** 2 + (y - M / 2) ** 2) / (2 * 30.0**2))  # inside the field
    obj = torch.tensor(env * (1 + 0.3 * rng.standard_normal((M, M))), dtype=torch.complex128)
    c = M // 2 - m // 2
    d = torch.tensor(frac, dtype=torch.float64)
    win = extract_patches(fft2c(obj), (c + d)[None], (m, m), spectrum=True)[0]
    tilted = obj * torch.tensor(np.exp(-2j * np.pi * (frac[0] * y + frac[1] * x) / M))
    exact = fft2c(tilted)[c : c + m, c : c + m]
    a, b = ifft2c(win), ifft2c(exact)
    g = (a * b.conj()).sum()
    err = float((a - g / g.abs() * b).norm() / b.norm())
    assert err < 0.03, err
