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


@pytest.mark.parametrize("side", [64, 65])
def test_no_crossing_reads_nyquist_for_odd_and_even_sides(side):
    """Two identical images never cross: the bound is Nyquist, 0.5 c/px, for an odd side
    too. Its last ring is centred at (n // 2) / n = 0.4923 but reaches 0.5; reporting the
    centre ranked P25's three-mode run (a 137-pixel box) one ring below its one-mode run
    (140 pixels), though neither crossed (issue #21)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((side, side + 3)) + 1j * rng.standard_normal((side, side + 3))
    res = frc(a, a.copy(), window="hann")
    assert res.freq[-1] == pytest.approx((side // 2) / side)
    assert res.resolution("halfbit") == (0.5, None, False)


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


def test_half_split_lattice_takes_a_clipped_led_board():
    # an LED board clipped to a disc (steps 3 and 2.7, 2 % placement jitter, any order):
    # not a full raster, so "auto" alternates, "lattice" gives the checkerboard
    iy, ix = np.meshgrid(np.arange(-5, 6), np.arange(-5, 6), indexing="ij")
    on = iy**2 + ix**2 <= 20
    rng = np.random.default_rng(0)
    order = rng.permutation(int(on.sum()))
    nodes = np.stack([iy[on], ix[on]], 1)[order]
    pos = nodes * [3.0, 2.7] + rng.normal(0, 0.06, nodes.shape)
    a, b = half_split_indices(pos, method="lattice")
    assert len(a) + len(b) == len(pos)
    parity = nodes.sum(1) % 2
    assert len(set(parity[a].tolist())) == 1 and len(set(parity[b].tolist())) == 1
    assert parity[a][0] != parity[b][0]
    assert list(half_split_indices(pos)[0][:3]) == [0, 2, 4]  # auto: no full raster
    with pytest.raises(ValueError, match="lattice"):  # a missing row is no lattice
        half_split_indices(pos[nodes[:, 0] != 1], method="lattice")
    t = np.linspace(0, 30, 51)  # a spiral is no lattice
    with pytest.raises(ValueError, match="lattice"):
        half_split_indices(np.stack([t * np.sin(t), t * np.cos(t)], 1), method="lattice")


def test_frc_matches_spectral_snr_ring_by_ring():
    """Two copies of a signal with independent noise: FRC(k) = SNR(k) / (1 + SNR(k)).

    The signal's power spectrum falls as a Gaussian and the noise is white, so the SNR is
    known per ring; each ring must sit within 4 standard errors of the prediction, with the
    standard error of a correlation, ``(1 - rho^2) / sqrt(n_indep)`` (real images: the
    Hermitian half of the ring, ``n / 2`` samples).
    """
    n = 256
    rng = np.random.default_rng(11)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    q = np.hypot(fy, fx)
    s_amp = 10.0 * np.exp(-((q / 0.12) ** 2))  # signal amplitude spectrum per pixel
    signal = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * s_amp).real
    a = signal + rng.standard_normal((n, n))
    b = signal + rng.standard_normal((n, n))
    res = frc(a, b, window=None)
    k, _ = ring_indices((n, n))
    snr = np.bincount(k[k >= 0], (s_amp**2)[k >= 0]) / np.bincount(k[k >= 0])
    rho = snr / (1 + snr)
    se = (1 - rho**2) / np.sqrt(res.n_per_ring / 2)
    rings = slice(2, None)
    dev = np.abs(res.frc[rings] - rho[rings]) / se[rings]
    assert np.all(dev < 4.0), np.max(dev)
    # and it is a real test: the prediction spans correlated and uncorrelated rings
    assert rho[2] > 0.99 and rho[-1] < 0.01
    # the crossing of the 1/7 threshold is where SNR/(1+SNR) = 1/7, i.e. SNR = 1/6
    f7 = res.resolution("1/7").freq
    f_true = 0.12 * np.sqrt(np.log(100 * 6) / 2)  # s_amp^2 = 100 exp(-2 (f/0.12)^2) = 1/6
    assert f7 == pytest.approx(f_true, abs=3 / n)


def test_masked_threshold_uses_effective_counts():
    """A binary mask over a quarter of the image halves each ring's count (hand-computed)."""
    n = 64
    rng = np.random.default_rng(12)
    mask = np.zeros((n, n))
    mask[:32, :32] = 1.0
    a, b = rng.standard_normal((2, n, n))
    res = frc(a, b, window=None, mask=mask)
    full = frc(a, b, window=None)
    np.testing.assert_array_equal(res.n_per_ring, full.n_per_ring)
    np.testing.assert_allclose(res.n_effective, full.n_per_ring / 2)
    # ring 10 of a 64x64 grid: count its pixels by hand and evaluate the published formula
    k, _ = ring_indices((n, n))
    n10 = int(np.sum(k == 10))
    s = np.sqrt(n10 / 2)
    assert res.halfbit[10] == pytest.approx((0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s))
    assert res.halfbit[10] > full.halfbit[10]  # fewer samples: a higher threshold
    # a soft window: A_eff = (sum w^2)^2 / sum w^4
    w = np.outer(np.hanning(n), np.hanning(n))
    soft = frc(a, b, window=w)
    a_eff = np.sum(w**2) ** 2 / np.sum(w**4)
    np.testing.assert_allclose(soft.n_effective, full.n_per_ring * np.sqrt(a_eff / n**2))
    assert soft.min_freq == pytest.approx(2 / np.sqrt(a_eff))


def test_effective_counts_match_the_noise_spread_under_a_mask():
    """The spread of the FRC of independent noise grows as 1/sqrt(n_eff) under a mask.

    Over many independent pairs, the variance of each ring's FRC is ~1/n_indep: a mask over
    1/16 of the field must multiply it by ~4, as the effective count says (counting every
    pixel of the ring would predict no change, the plain area ratio 16x).
    """
    n = 64
    rng = np.random.default_rng(13)
    mask = np.zeros((n, n))
    mask[24:40, 24:40] = 1.0
    rings = slice(8, 30)
    pred_ratio = None
    curves_f, curves_m = [], []
    for _ in range(200):
        a, b = rng.standard_normal((2, n, n))
        curves_f.append(frc(a, b, window=None).frc[rings])
        r = frc(a, b, window=None, mask=mask)
        curves_m.append(r.frc[rings])
        pred_ratio = r.n_per_ring[rings] / r.n_effective[rings]
    var_full = np.var(curves_f, axis=0).mean()
    var_mask = np.var(curves_m, axis=0).mean()
    assert pred_ratio.mean() == pytest.approx(4.0)
    assert var_mask / var_full == pytest.approx(pred_ratio.mean(), rel=0.2)


def test_resolution_rule_skips_low_frequency_region_only():
    """The first crossing after the low-frequency region; later recoveries do not count."""
    res = frc(np.ones((64, 64)), np.ones((64, 64)), window=None)
    assert res.min_freq == pytest.approx(2 / 64)
    curve = np.full(res.freq.shape, 0.9)
    curve[1] = 0.0  # a dip inside the low-frequency region (ring 1 < 2 / 64 * 64)
    curve[10:14] = 0.0  # the first real crossing ...
    curve[14:] = 0.9  # ... and a recovery that must not move the result
    res.frc = curve
    r = res.resolution(0.5)
    assert r.crossed and r.freq == pytest.approx((9 + 0.4 / 0.9) / 64)
    assert resolution(res, 0.5, start=1).freq == pytest.approx((0 + 0.4 / 0.9) / 64)


def test_frc_edge_cases_read_nothing_resolved_or_refuse():
    """A curve below the threshold from the first searched ring resolves nothing (freq 0,
    length inf; it read the edge of the skipped region, 0.15-0.25 c/px on small boxes); a
    NaN under zero weight is ignored, one inside is refused; a mask of another shape is
    refused (it broadcast)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 20)), rng.normal(size=(20, 20))
    t = taper_mask(np.ones((20, 20), bool))
    res = frc(a, b, window=None, mask=t)
    start = int(np.searchsorted(res.freq, res.min_freq - 1e-12))
    res.frc[:] = -1.0  # below everywhere
    r = resolution(res, "halfbit", pixel_size=1e-9)
    assert start > 1 and r == (0.0, float("inf"), True)
    x = rng.normal(size=(64, 64))
    y = x + 0.1 * rng.normal(size=(64, 64))
    m = np.zeros((64, 64))
    m[8:56, 8:56] = 1.0
    ref = frc(x, y, window=None, mask=m).frc
    x[0, 0] = np.nan  # outside the mask
    np.testing.assert_allclose(frc(x, y, window=None, mask=m).frc, ref)
    x[30, 30] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frc(x, y, window=None, mask=m)
    with pytest.raises(ValueError, match="mask shape"):
        frc(y, y, mask=np.ones((64, 1)))
