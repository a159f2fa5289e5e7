"""Mixed-state reconstruction (issue #21): a partially coherent probe of three modes with
power fractions 0.6 / 0.3 / 0.1 (``simulate(..., mode_fractions=...)``, far field, 100
frames of 64 x 64, overlap 0.75, noise-free), reconstructed from the blind start.

Measured with rPIE defaults, 100 epochs (seeds 0 / 1 / 2): one mode 0.0628 / 0.0625 /
0.0568, three modes 0.0220 / 0.0198 / 0.0150 (2.9-3.8x lower); fractions recovered within
0.006 of the truth. At dose 1e6 photons per frame (seed 0) the noise dominates: one mode
0.091, three 0.0915 (fractions 0.671 / 0.251 / 0.078); at 1e7: 0.0654 vs 0.0372.

RNF defaults, 200 epochs (the modes form slowly): per-pixel mode residuals at
``lr_mode_pixels`` 0.05, chosen from 0.025 / 0.05 / 0.1 / 0.2 / 0.4 on tuning seeds 10 and
11 (median 0.0216 / 0.0211 / 0.0234 / 0.0286 / 0.0389); the added modes start with 30 % of
the power each (``mode_start_fraction``, chosen from 0.05 / 0.15 / 0.3 on the same tuning
seeds); the modes' rates fall on a cosine to 0.1 of their start (``lr_mode_decay``, chosen
from 1 / 0.3 / 0.1 / 0.03 on the same tuning seeds, two threads). Held-out seeds 0 / 1 / 2,
two threads (this suite's setting): one mode 0.0555 / 0.0457 / 0.0428, three modes 0.0132 /
0.0209 / 0.0156 (4.21x / 2.18x / 2.75x), fractions within 0.008
(``bench/results/records/rnf-lr-mode-decay-cbd8564.json``). At a constant mode rate (before)
seed 1 gave 1.86x with two threads (2.03x with one): the issue's 2x was not met on every
seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.rnf_mode_tuning import FRACTIONS, mixed_state_case
from ptytasks.engines.options import PIEOptions
from ptytasks.engines.pie import reconstruct_pie
from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.metrics.errors import quality_report
from ptytasks.simulate import simulate


def _error(d, mask, obj) -> float:
    return quality_report(obj, d.ground_truth["object"], mask)["complex_error"]


def _assert_orthogonal(probe):
    a = probe.reshape(len(probe), -1).astype(np.complex128)
    g = a @ a.conj().T
    assert np.abs(g - np.diag(np.diag(g))).max() < 1e-4 * np.abs(g).max(), np.abs(g).round(1)
    assert np.all(np.diff(np.diag(g).real) <= 0)  # strongest first


def _assert_mixed_beats_single(d, mask, single, mixed, gain: float):
    """Three orthogonal modes, the true fractions within 0.05, error ``gain``x lower."""
    e1, e3 = _error(d, mask, single.object), _error(d, mask, mixed.object)
    assert mixed.probe.shape == (3, *d.frame_shape)
    _assert_orthogonal(mixed.probe)
    fractions = mixed.extras["mode_power_fractions"]
    assert np.abs(fractions - np.asarray(FRACTIONS)).max() <= 0.05, fractions
    assert e3 <= e1 / gain, (e1, e3)
    assert "mode_power_fractions" not in single.extras


def _check_rpie(seed: int):
    d, mask = mixed_state_case(seed)
    single = reconstruct_pie(d, PIEOptions(iterations=100))
    mixed = reconstruct_pie(d, PIEOptions(iterations=100, probe_modes=3))
    _assert_mixed_beats_single(d, mask, single, mixed, gain=2.0)


@pytest.mark.slow  # ~25 s a seed; the default run has the pipeline's two-mode test
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rpie_mixed_state_halves_the_error_and_finds_the_fractions(seed):
    _check_rpie(seed)


def test_probe_modes_must_be_positive():
    d = simulate("farfield", seed=0, n_positions=9)
    with pytest.raises(ValueError, match="probe_modes"):
        reconstruct_pie(d, PIEOptions(iterations=1, probe_modes=0))


@pytest.mark.slow  # ~3 min a seed: 200 epochs with one mode and with three
@pytest.mark.parametrize("seed", [0, 1, 2])  # held out: the mode settings came from 10, 11
def test_rnf_mixed_state_halves_the_error_and_finds_the_fractions(seed):
    d, mask = mixed_state_case(seed)
    single = reconstruct_rnf(d, RNFOptions(epochs=200))
    mixed = reconstruct_rnf(d, RNFOptions(epochs=200, probe_modes=3))
    _assert_mixed_beats_single(d, mask, single, mixed, gain=2.0)


def test_rnf_added_modes_start_with_their_share():
    """The start's power split (mode_start_fraction), capped for many modes."""
    d = simulate("farfield", seed=0, n_positions=9)
    for k, share in ((3, 0.3), (6, 0.9 / 5)):
        r = reconstruct_rnf(d, RNFOptions(epochs=0, probe_modes=k, learn_probe=False))
        fr = r.extras["mode_power_fractions"]
        want = sorted([1 - (k - 1) * share] + [share] * (k - 1), reverse=True)  # strongest 1st
        np.testing.assert_allclose(fr, want, atol=1e-4)


@pytest.mark.slow
def test_position_correction_works_with_probe_modes():
    """Measured (seed 3, 64 frames, 1.5 px RMS position errors, two modes 0.7 / 0.3, rPIE
    60 iterations with position correction): RMS position error 1.5 -> 0.105 px with two
    modes (0.076 with one), fractions 0.83 / 0.17 (the position errors slow the modes)."""
    from ptytasks.engines.options import PositionCorrectionOptions

    d = simulate("farfield", seed=3, n_positions=64, overlap=0.75, mode_fractions=(0.7, 0.3),
                 position_error_px=1.5)  # fmt: skip
    truth = d.ground_truth["positions_px"]

    def rms(p):
        e = p - truth
        e = e - e.mean(0)  # a common shift is not determined by the data
        return float(np.sqrt((e**2).sum(1).mean()))

    r = reconstruct_pie(d, PIEOptions(iterations=60, probe_modes=2,
                                      position_correction=PositionCorrectionOptions()))  # fmt: skip
    assert r.probe.shape == (2, *d.frame_shape)
    assert rms(d.positions_px) > 1.4 and rms(r.positions_px) < 0.3, rms(r.positions_px)
