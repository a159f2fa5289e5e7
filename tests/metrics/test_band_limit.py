"""The band limit a modality reports for the half-data FRC
(:meth:`ptytasks.modalities.base.Modality.band_limit`), against hand-computed geometry."""

from __future__ import annotations

import numpy as np
import pytest

from ptytasks.data import PtychoData
from ptytasks.modalities import modality_of

M, PX, WL, NA = 256, 0.5e-6, 0.5e-6, 0.1  # object grid, pixel (m), wavelength (m), NA
RHO = NA / WL * PX  # pupil radius, cycles per object pixel (0.1)


def _fourier(k_units_of_rho):
    k = np.asarray(k_units_of_rho, float) * RHO / PX  # cycles/m
    return PtychoData(modality="fourier", frames=np.ones((len(k), 64, 64), np.float32),
                      wavelength=WL, pixel_size=PX, object_shape=(M, M), wavevectors=k,
                      params={"na": NA})  # fmt: skip


def test_one_led_is_the_pupil_five_leds_reach_root_two_pupils():
    # one on-axis LED: the objective's own band, NA / lambda
    assert modality_of(_fourier([[0, 0]])).band_limit(_fourier([[0, 0]])) == pytest.approx(
        RHO, abs=1.5 / M)
    # centre plus four LEDs one pupil radius out along the axes: the discs reach 2 rho
    # along the axes but only sqrt(2) rho along the diagonals (hand computed), and the
    # FRC may claim no more than what every direction measured
    d = _fourier([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])
    assert modality_of(d).band_limit(d) == pytest.approx(np.sqrt(2) * RHO, abs=1.5 / M)


def test_full_coverage_and_scanning_modalities_have_no_band_limit():
    g = np.stack(np.meshgrid(np.arange(-6, 7), np.arange(-6, 7)), -1).reshape(-1, 2)
    d = _fourier(g)  # LEDs every rho out to 6 rho: everything up to Nyquist (5 rho)
    assert modality_of(d).band_limit(d) is None
    from ptytasks.simulate.datasets import simulate

    ff = simulate("farfield", frame_size=32, n_positions=9, seed=0)
    assert modality_of(ff).band_limit(ff) is None


def test_half_data_band_limit_is_the_lower_halfs():
    from ptytasks.evaluation import half_data_band_limit

    d = _fourier([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])
    # half a: the centre LED alone (rho); half b: all five (sqrt(2) rho)
    lim = half_data_band_limit(d, [np.array([0]), np.arange(5)])
    assert lim == pytest.approx(RHO, abs=1.5 / M)


def test_half_data_band_limit_keeps_the_cap_when_one_half_reaches_nyquist():
    """One half measured up to Nyquist (None), the other less: the cap is the other's."""
    from ptytasks.evaluation import half_data_band_limit

    g = np.stack(np.meshgrid(np.arange(-6, 7), np.arange(-6, 7)), -1).reshape(-1, 2)
    d = _fourier(np.concatenate([g, [[0, 0]]]))
    lim = half_data_band_limit(d, [np.arange(len(g)), np.array([len(g)])])
    assert lim == pytest.approx(RHO, abs=1.5 / M)
