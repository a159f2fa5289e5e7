"""Fourier ring correlation: self, independent noise, noise-dependent crossing, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptytasks.metrics import (
    frc,
    half_split_indices,
    halfbit_threshold,
    resolution,
    ring_indices,
    taper_mask,
)

N = 128


def powerlaw_image(n: int, rng, p: float = 1.5) -> np.ndarray:
    """Real image with a 1/f^p amplitude spectrum (SNR falls with frequency, like real data)."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    q = np.hypot(fy, fx)
    q[0, 0] = 1.0
    img = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) / q**p).real
    return img / img.std()


def test_self_frc_is_one():
    rng = np.random.default_rng(0)
    img = powerlaw_image(N, rng)
    for a in (img, img * np.exp(1j * img)):
        for window in (None, "tukey", "hann"):
            res = frc(a, a, window=window)
            np.testing.assert_allclose(res.frc, 1.0, atol=1e-6)
    assert res.freq[0] == 0 and res.freq[-1] == pytest.approx(0.5)
    assert res.n_per_ring.sum() == np.sum(ring_indices((N, N))[0] >= 0)


@pytest.mark.parametrize("kind", ["real", "complex"])
def test_independent_noise_near_zero(kind):
    rng = np.random.default_rng(1)

    def noise():
        z = rng.standard_normal((N, N))
        return z + 1j * rng.standard_normal((N, N)) if kind == "complex" else z

    res = frc(noise(), noise(), window=None)
    band = 3 / np.sqrt(res.n_per_ring)
    inside = np.abs(res.frc[3:]) < band[3:]
    # sd is 1/sqrt(n) for real images (Hermitian pairs), 1/sqrt(2n) for complex ones, so the
    # 3/sqrt(n) band is 3 sd (real: a stray ring allowed) or 4.2 sd (complex: none allowed).
    if kind == "complex":
        assert inside.all()
    else:
        assert inside.mean() > 0.97 and np.all(
            np.abs(res.frc[3:]) < 4.5 / np.sqrt(res.n_per_ring[3:])
        )
    assert abs(np.mean(res.frc[3:])) < 0.02  # no bias


def test_crossing_falls_as_noise_rises():
    rng = np.random.default_rng(2)
    img = powerlaw_image(N, rng)
    freqs, freqs7 = [], []
    for sigma in (0.3, 1.0, 3.0):
        pair = [img + sigma * rng.standard_normal((N, N)) for _ in range(2)]
        res = frc(torch.from_numpy(pair[0]), pair[1])
        hb = res.resolution("halfbit", pixel_size=10e-9)
        assert hb.crossed and hb.length_m == pytest.approx(10e-9 / hb.freq)
        freqs.append(hb.freq)
        freqs7.append(resolution(res, "1/7").freq)
    assert freqs[0] > freqs[1] > freqs[2] > 0.02
    assert freqs7[0] > freqs7[1] > freqs7[2]


def test_crossing_interpolation_and_thresholds():
    n = np.array([1, 10, 100, 1000, 10**8])
    hb = halfbit_threshold(n)
    # T(1) = 1 exactly; T(100) from the published constants; T(inf) = 0.2071 / 1.2071
    assert hb[0] == pytest.approx(1.0, abs=1e-4) and np.all(np.diff(hb) < 0)
    assert hb[2] == pytest.approx(0.39812 / 1.29812, rel=1e-6)
    assert hb[-1] == pytest.approx(0.2071 / 1.2071, rel=1e-3)
    res = frc(np.ones((8, 8)), np.ones((8, 8)), window=None)  # only ring 0 has power
    res.frc = np.array([1.0, 0.8, 0.6, 0.4, 0.2])
    r = res.resolution(0.45)
    assert r.crossed and r.freq == pytest.approx(2.75 / 8)  # 3/4 of the way from ring 2 to 3
    res.frc[:] = 0.9
    assert not res.resolution(0.5).crossed and res.resolution(0.5).freq == 0.5


def test_ring_binning():
    k, freq = ring_indices((N, N))
    np.testing.assert_allclose(freq, np.arange(N // 2 + 1) / N)
    assert k[0, 10] == 10 and k[6, 8] == 10 and k[N // 2, N // 2] == -1  # corner > Nyquist
    npr = np.bincount(k[k >= 0])
    # pixels inside ring k: a disc of radius k + 1/2 grid steps
    kk = np.arange(10, 60)
    np.testing.assert_allclose(np.cumsum(npr)[kk], np.pi * (kk + 0.5) ** 2, rtol=0.02)
    # a pure cosine of 12 cycles across the field correlates in ring 12 only
    x = np.cos(2 * np.pi * 12 * np.arange(N) / N)[None, :] * np.ones((N, 1))
    noise = np.random.default_rng(4).standard_normal((N, N))
    res = frc(x + noise, x + np.roll(noise, 7, 0), window=None)
    assert np.argmax(res.frc[1:]) + 1 == 12


def test_taper_mask_zero_at_edges():
    m = np.zeros((32, 32), bool)
    m[4:28, 4:28] = True
    t = taper_mask(m, 4)
    assert t[~m].max() == 0 and t[16, 16] == 1 and 0 < t[5, 16] < 1
    assert taper_mask(np.ones((8, 8), bool), 2)[0, 4] < 1  # array border counts as outside


def test_half_split_indices():
    a, b = half_split_indices(9)
    assert list(a) == [0, 2, 4, 6, 8] and list(b) == [1, 3, 5, 7]
    rng = np.random.default_rng(3)
    yy, xx = np.meshgrid(np.arange(6) * 2e-6, np.arange(5) * 2e-6, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], 1) + rng.normal(0, 1e-7, (30, 2))
    order = rng.permutation(30)  # order must not matter for the checkerboard
    a, b = half_split_indices(pos[order])
    grid = np.round(pos[order] / 2e-6).astype(int)
    assert len(a) == len(b) == 15
    assert set((grid[a].sum(1) % 2).tolist()) == {0} and set((grid[b].sum(1) % 2).tolist()) == {1}
    t = np.linspace(0, 30, 51)  # a spiral is no raster: alternate frames
    a, b = half_split_indices(np.stack([t * np.sin(t), t * np.cos(t)], 1))
    assert list(a[:3]) == [0, 2, 4] and len(a) == 26
    with pytest.raises(ValueError):
        half_split_indices(np.stack([t, t**2], 1), method="checkerboard")
