"""The pipeline's half-data FRC: halves aligned (own global phase), background mean removed,
soft-edged region -- the naive FRC of two masked halves never crosses the threshold."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ptytasks.evaluation import evaluate_mosaic, half_data_frc
from ptytasks.simulate.objects import complex_object


def _halves(phase: float, noise: float = 0.05):
    rng = np.random.default_rng(0)
    t = complex_object((96, 96), "camera").astype(np.complex128)
    t = gaussian_filter(t.real, 1.5) + 1j * gaussian_filter(t.imag, 1.5)  # band-limited
    n = lambda: noise * (rng.standard_normal(t.shape) + 1j * rng.standard_normal(t.shape))  # noqa: E731
    return t + n(), (t + n()) * np.exp(1j * phase)


def test_resolution_is_where_the_noise_takes_over_whatever_the_global_phase():
    w = np.zeros((96, 96))
    w[12:-12, 12:-12] = 1.0
    found = []
    for phase in (0.0, 2.5):
        a, b = _halves(phase)
        m = evaluate_mosaic(a, w, halves=(a, b), pixel_size=1e-8)
        found.append(m["halfdata_frc_resolution"])
    assert 0.08 < found[0] < 0.3 and abs(found[1] - found[0]) < 0.01, found
    assert m["halfdata_frc_resolution_m"] == 1e-8 / found[1]


def test_identical_halves_correlate_everywhere_noisy_ones_cross_early():
    mask = np.zeros((96, 96), bool)
    mask[12:-12, 12:-12] = True
    a, _ = _halves(0.0)
    same = half_data_frc(a, a.copy(), mask)
    assert np.nanmin(same.frc[1:]) > 0.999
    noisy = half_data_frc(*_halves(0.0, noise=0.2), mask).resolution("halfbit")
    assert noisy.freq < 0.08


def _shared_beyond_band(band: float, seed: int = 1):
    """Two halves that agree only *beyond* ``band`` cycles/px (a shared pattern there, as a
    network's harmonics of what it measured) and hold independent noise below it."""
    from ptytasks.evaluation import low_pass

    rng = np.random.default_rng(seed)
    z = lambda: rng.standard_normal((96, 96)) + 1j * rng.standard_normal((96, 96))  # noqa: E731
    shared = z()
    shared = shared - low_pass(shared, band)  # only beyond the band
    return low_pass(z(), band) + shared, low_pass(z(), band) + shared


def test_band_limit_caps_the_search_and_ignores_what_agrees_beyond_it():
    mask = np.zeros((96, 96), bool)
    mask[12:-12, 12:-12] = True
    # identical halves: no crossing; without a band limit that reads Nyquist, with one
    # it reads the band limit, flagged as a bound
    a, _ = _halves(0.0)
    assert half_data_frc(a, a.copy(), mask).resolution("halfbit") == (0.5, None, False)
    capped = half_data_frc(a, a.copy(), mask, band_limit=0.3).resolution("halfbit")
    assert capped.freq == 0.3 and not capped.crossed
    # agreement only beyond the band: without the limit the curve sits high out there;
    # with it the halves are low-passed first and the crossing comes inside the band
    a, b = _shared_beyond_band(0.3)
    free = half_data_frc(a, b, mask)
    assert np.nanmean(free.frc[free.freq > 0.35]) > 0.5
    banded = half_data_frc(a, b, mask, band_limit=0.3)
    assert np.nanmax(np.abs(banded.frc[(banded.freq > 0.35)])) < 0.2
    res = banded.resolution("halfbit")
    assert res.crossed and res.freq < 0.1


def test_evaluate_mosaic_reports_the_band_limit_and_whether_it_crossed():
    w = np.zeros((96, 96))
    w[12:-12, 12:-12] = 1.0
    a, _ = _halves(0.0)
    m = evaluate_mosaic(a, w, halves=(a, a.copy()), band_limit=0.3)
    assert m["halfdata_frc_resolution"] == 0.3
    assert m["halfdata_frc_crossed"] == 0.0 and m["halfdata_frc_band_limit"] == 0.3
    m = evaluate_mosaic(a, w, halves=_halves(0.0, noise=0.2))
    assert m["halfdata_frc_crossed"] == 1.0 and "halfdata_frc_band_limit" not in m


def test_an_empty_trusted_region_is_named_not_an_index_error():
    import pytest

    a = np.ones((16, 16), np.complex64)
    with pytest.raises(ValueError, match="selects no pixels"):
        half_data_frc(a, a, np.zeros((16, 16), bool))
