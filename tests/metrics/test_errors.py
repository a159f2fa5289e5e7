"""Complex error, PSNR/SSIM and the quality report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptytasks.metrics import (
    amplitude_phase,
    complex_error,
    phase_ramp,
    psnr,
    quality_report,
    ssim,
    subpixel_shift,
)


def make_object(n: int = 96, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.standard_normal((n, n)), 1.5, mode="wrap")
    p = gaussian_filter(rng.standard_normal((n, n)), 2, mode="wrap")
    return (0.8 + 0.2 * a / a.std()) * np.exp(2j * p / p.std())  # phase wraps past +-pi


@pytest.fixture(scope="module")
def ref():
    return make_object()


def noisy(x, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return x + sigma * (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape))


def test_complex_error_identical_and_phase_invariant(ref):
    assert complex_error(ref, ref) == pytest.approx(0, abs=1e-9)
    assert complex_error(ref, ref, align=False) == pytest.approx(0, abs=1e-12)
    assert complex_error(np.exp(2.5j) * ref, ref, align=False) == pytest.approx(0, abs=1e-12)
    # a non-trivial error is seen, and is the same whatever the global phase
    e0 = complex_error(noisy(ref, 0.05), ref, align=False)
    e1 = complex_error(np.exp(-1.1j) * noisy(ref, 0.05), ref, align=False)
    assert 0.05 < e0 < 0.2 and e1 == pytest.approx(e0, rel=1e-9)


def test_complex_error_masked(ref):
    mask = np.zeros(ref.shape, bool)
    mask[20:-20, 20:-20] = True
    x = ref.copy()
    x[~mask] = 0  # garbage outside the region does not count
    assert complex_error(x, ref, mask, align=False) == pytest.approx(0, abs=1e-12)
    assert complex_error(x, ref, align=False) > 0.1


def test_psnr_ssim_sanity(ref):
    amp = np.abs(ref)
    assert psnr(amp, amp) == math.inf and ssim(amp, amp) == pytest.approx(1.0)
    rng = np.random.default_rng(5)
    p, s = [], []
    for sigma in (0.01, 0.03, 0.1):
        a = amp + sigma * rng.standard_normal(amp.shape)
        p.append(psnr(a, amp))
        s.append(ssim(a, amp))
    assert p[0] > p[1] > p[2] and 1 > s[0] > s[1] > s[2]
    # psnr definition: 10 log10(R^2 / mse) with R the reference range
    a = amp + 0.01
    assert psnr(a, amp) == pytest.approx(10 * np.log10(np.ptp(amp) ** 2 / 1e-4))
    assert psnr(a, amp, data_range=1.0) == pytest.approx(40.0)


def test_amplitude_phase_ignores_global_phase_and_wraps(ref):
    amp, amp_ref, ph, ph_ref = amplitude_phase(np.exp(3j) * ref, ref, align=False)
    np.testing.assert_allclose(amp, amp_ref, atol=1e-12)
    np.testing.assert_allclose(ph, ph_ref, atol=1e-12)
    assert psnr(ph, ph_ref) > 200  # equal up to rounding


def test_quality_report(ref):
    mask = np.zeros(ref.shape, bool)
    mask[16:-16, 12:-12] = True
    keys = {
        "complex_error",
        "amp_psnr",
        "amp_ssim",
        "phase_psnr",
        "phase_ssim",
        "frc_resolution",
        "frc_resolution_m",
    }
    distorted = (
        0.7 * np.exp(1j) * phase_ramp(ref.shape, (0.02, -0.01)) * subpixel_shift(ref, (1.3, -0.6))
    )
    clean = quality_report(distorted, ref, mask, pixel_size=5e-9)
    assert keys <= set(clean) and all(isinstance(v, float) for v in clean.values())
    assert clean["complex_error"] < 1e-3 and clean["amp_ssim"] > 0.999
    assert clean["phase_psnr"] > 60 and clean["frc_resolution"] == 0.5
    assert clean["shift_y_px"] == pytest.approx(-1.3, abs=0.01)
    reports = [quality_report(noisy(distorted, s), ref, mask) for s in (0.05, 0.3)]
    lo, hi = reports
    assert lo["complex_error"] < hi["complex_error"]
    for k in ("amp_psnr", "amp_ssim", "phase_psnr", "phase_ssim"):
        assert clean[k] > lo[k] > hi[k], k
    assert hi["frc_resolution"] < 0.5 and math.isnan(hi["frc_resolution_m"])


def test_phase_ssim_does_not_depend_on_where_the_mean_phase_falls():
    # Three phase levels (0, 0.6, 1.2 rad) with the same small error on the middle level,
    # which covers the same area in both objects. Referenced to its mean, as quality_report
    # does, the middle level sits at zero when the other areas make the mean 0.6 rad, and
    # plain SSIM (its luminance term assumes images in [0, R]) collapses there; with the
    # reference's lowest phase as black the score no longer depends on the other areas.
    from ptytasks.metrics import phase_ssim

    yy, xx = np.mgrid[:100, :100]
    err = 0.04 * np.sin(2 * np.pi * xx / 24) * np.cos(2 * np.pi * yy / 20)
    new, old = [], []
    for top in (30, 2):  # columns of the top level: mean phase 0.60 rad, then 0.26 rad
        level = np.zeros((100, 100), int)
        level[:, :40] = 1
        level[:, 40:40 + top] = 2
        ref = 0.6 * level
        ref = ref - ref.mean()
        rec = ref + np.where(level == 1, err, 0.0)
        new.append(phase_ssim(rec, ref))
        old.append(ssim(rec, ref))
    assert abs(new[0] - new[1]) < 0.01 and min(new) > 0.9
    assert old[1] - old[0] > 0.1  # plain SSIM: the level at zero loses its structure
    assert phase_ssim(ref, ref) == pytest.approx(1.0)
    assert phase_ssim(rec + 2.0, ref + 2.0) == pytest.approx(new[1])  # offset-free


def test_frc_against_a_reference_does_not_credit_the_shared_mean():
    """A uniform object (an engine's start: no information) correlates with nothing, and a
    reference low-passed at 0.06 c/px crosses near 0.06: the FRC removes each image's
    windowed mean, whose window spectrum both would otherwise share out to ~1/taper c/px."""
    n = 160
    rng = np.random.default_rng(0)
    a = gaussian_filter(rng.standard_normal((n, n)), 1.0)
    p = gaussian_filter(rng.standard_normal((n, n)), 1.0)
    ref = (0.9 + 0.1 * a / a.std()) * np.exp(0.5j * p / p.std())
    yy, xx = np.indices((n, n))
    lit = np.hypot(yy - 80, xx - 75) < 60  # an irregular lit region inside the box
    lit |= np.hypot(yy - 110, xx - 120) < 30
    flat = np.ones_like(ref)
    assert quality_report(flat, ref, lit, threshold=0.5)["frc_resolution"] < 0.03
    q = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    low = noisy(np.fft.ifft2(np.fft.fft2(ref) * (q < 0.06)), 0.01)
    res = quality_report(low, ref, lit, threshold=0.5)["frc_resolution"]
    assert 0.04 < res < 0.067, res


def test_the_pipeline_reads_the_truth_frc_at_0_5_whatever_the_half_data_threshold(ref):
    """Against a noise-free truth the FRC crosses 0.5 (1/7's analogue for one noisy image);
    the half-bit curve, built for two noisy halves, would credit more resolution."""
    from ptytasks.evaluation import TRUTH_FRC_THRESHOLD, evaluate_mosaic, trusted_mask

    rec, w = noisy(ref, 0.3), np.ones(ref.shape)
    got = {t: evaluate_mosaic(rec, w, truth=ref, threshold=t)["truth_frc_resolution"]
           for t in ("halfbit", "1/7")}
    mask = trusted_mask(w)
    want = quality_report(rec, ref, mask, threshold=TRUTH_FRC_THRESHOLD)["frc_resolution"]
    assert TRUTH_FRC_THRESHOLD == 0.5 and got == {"halfbit": want, "1/7": want}
    assert quality_report(rec, ref, mask, threshold="halfbit")["frc_resolution"] > want
    assert quality_report(rec, ref, mask)["frc_resolution"] == want  # the default, too


def test_quality_report_frc_searches_below_the_band_limit(ref):
    # a reference low-passed to 0.2 c/px, and a reconstruction that matches it below and
    # holds only noise above: unbounded, the crossing sits just above 0.2; bounded at the
    # band, no crossing (the bound is reported)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(96), np.fft.fftfreq(96), indexing="ij"))
    low = np.fft.ifft2(np.fft.fft2(ref) * (f <= 0.2))
    rng = np.random.default_rng(1)
    hf = np.fft.ifft2(np.fft.fft2(rng.standard_normal((96, 96))) * (f > 0.2))
    recon = low + 0.3 * hf / np.abs(hf).std() * np.abs(low).std()
    free = quality_report(recon, low)["frc_resolution"]
    assert 0.2 < free < 0.3
    assert quality_report(recon, low, band_limit=0.2)["frc_resolution"] == pytest.approx(0.2)
