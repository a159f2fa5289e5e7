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
