"""The periodic Gaussian blur (:func:`ptytasks.physics.fft.gaussian_blur`) against the
analytic facts of a Gaussian kernel: unit gain (the mean is kept), centred on the impulse,
variance ``sigma**2`` along each axis, no spread across the other."""

from __future__ import annotations

import torch

from ptytasks.physics.fft import gaussian_blur


def test_blur_of_an_impulse_is_a_unit_gaussian_of_the_given_width():
    n, sigma = 64, 2.0
    x = torch.zeros(n, n, dtype=torch.complex128)
    x[0, 0] = 1.0
    k = gaussian_blur(x, sigma)
    assert torch.allclose(k.imag, torch.zeros_like(k.imag), atol=1e-12)
    k = k.real
    assert abs(float(k.sum()) - 1.0) < 1e-12
    d = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)  # signed offsets 0, 1, .., -1
    var_y = float((k.sum(1) * d**2).sum())
    var_x = float((k.sum(0) * d**2).sum())
    assert abs(var_y - sigma**2) < 1e-6 and abs(var_x - sigma**2) < 1e-6
    # centred on the impulse (the unpaired Nyquist offset, -n/2, leaves ~1e-9)
    assert abs(float((k.sum(1) * d).sum())) < 1e-8
    # separable: the kernel is the outer product of its marginals
    torch.testing.assert_close(k, torch.outer(k.sum(1), k.sum(0)))


def test_blur_keeps_the_mean_and_the_dtype():
    g = torch.Generator().manual_seed(0)
    x = torch.complex(torch.randn(9, 13, generator=g), torch.randn(9, 13, generator=g))
    y = gaussian_blur(x, 1.0)
    assert y.dtype == torch.complex64
    torch.testing.assert_close(y.mean(), x.mean())
    assert float((y - y.mean()).abs().square().mean()) < float((x - x.mean()).abs().square().mean())
