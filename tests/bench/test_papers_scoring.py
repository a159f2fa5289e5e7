"""The papers' phase scoring used beside ptyflow's in ``bench/bench_learned.py``."""

from __future__ import annotations

import numpy as np

from bench.bench_learned import papers_phase_ssim


def _object(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:n, :n]
    phase = -1.2 * ((yy // 8 + xx // 12) % 2) - 0.3 * (xx / n)
    mask = np.zeros((n, n), bool)
    mask[6:-6, 6:-6] = True
    return 0.9 * np.exp(1j * phase), mask


def test_is_one_for_the_truth_and_blind_to_a_global_phase():
    truth, mask = _object()
    assert papers_phase_ssim(truth, truth, mask) > 0.999
    assert papers_phase_ssim(2.0 * np.exp(2.5j) * truth, truth, mask) > 0.999  # wraps, undone


def test_a_few_outlying_pixels_squeeze_the_whole_map():
    truth, mask = _object()
    rng = np.random.default_rng(0)
    noisy = truth * np.exp(0.05j * rng.standard_normal(truth.shape))
    base = papers_phase_ssim(noisy, truth, mask)
    spoilt = noisy.copy()
    spoilt[10, 10:13] *= np.exp(2.5j)  # three pixels out of 1296
    assert base > 0.85
    # min-max: the outliers stretch the range, the structure shrinks with it (0.95 -> 0.46)
    assert papers_phase_ssim(spoilt, truth, mask) < base - 0.3
