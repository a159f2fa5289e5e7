"""Probe modes on measured data (issue #21): the tike Siemens star with three modes runs
end to end and does not lower the half-data FRC of the single-mode run (rPIE, the same
interleaved halves, independent reconstructions, standard first half-bit crossing).

The file stores one probe mode; the two extra modes start as its derivatives (5 % of the
power each, :func:`ptytasks.physics.modes.add_modes`).

Measured (30 rPIE iterations per half): star, 184 central frames: one mode 0.187, three
modes 0.247 cycles/px, power fractions 0.51 / 0.32 / 0.17 in both halves independently
(~25 s). P25 (200 frames, blind near-field start, z1 = 3.65 mm): 0.027 for both, fractions
0.67 / 0.17 / 0.16 in both halves (~105 s) -- a weak check: at 30 blind iterations the
single-mode baseline itself is low on this metric.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptytasks.engines.options import PIEOptions
from ptytasks.engines.pie import reconstruct_pie
from ptytasks.metrics import align, frc, half_split_indices, taper_mask
from ptytasks.physics.shifts import coverage
from tests.engines.test_realdata_pie import central, star  # noqa: F401 (fixture)

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _half_data(d, modes: int, iterations: int):
    halves = []
    for idx in half_split_indices(d.positions_px):
        opts = PIEOptions(iterations=iterations, probe_update_start=1, probe_modes=modes)
        halves.append(reconstruct_pie(d.subset(idx), opts))
    a, b = halves
    p = np.abs(np.asarray(a.probe)) ** 2
    w = torch.as_tensor(p.reshape(-1, *d.frame_shape).sum(0), dtype=torch.float64)
    cov = coverage(torch.as_tensor(d.positions_px), d.frame_shape, d.object_shape, w).numpy()
    mask = cov > 0.5 * cov.max()
    b_aligned, _ = align(b.object, a.object, mask)
    t = taper_mask(mask)
    a0 = a.object - (a.object * t).sum() / t.sum()
    b0 = b_aligned - (b_aligned * t).sum() / t.sum()
    return frc(b0, a0, window=None, mask=t), halves


def test_star_three_modes_keep_the_half_data_frc(star):  # noqa: F811
    d = central(star, 200.0)
    one, _ = _half_data(d, 1, 30)
    three, halves = _half_data(d, 3, 30)
    r1, r3 = one.resolution("halfbit").freq, three.resolution("halfbit").freq
    fractions = [h.extras["mode_power_fractions"] for h in halves]
    print(f"half-bit: one mode {r1:.3f}, three modes {r3:.3f} cyc/px; fractions "
          f"{np.round(fractions, 3).tolist()}; losses "
          f"{[round(h.final_loss, 4) for h in halves]}")
    assert all(h.probe.shape == (3, *d.frame_shape) for h in halves)
    assert r3 >= r1, (r1, r3)


P25 = "nearfield-xray-p25/PETRAIII_P25_Near_Field_Ptycho.cxi"


def test_p25_three_modes_keep_the_half_data_frc(data_dir):
    path = data_dir / P25
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    from storage.cxi import read_cxi

    d = read_cxi(path, z1=3.65e-3)
    one, _ = _half_data(d, 1, 30)
    three, halves = _half_data(d, 3, 30)
    r1, r3 = one.resolution("halfbit").freq, three.resolution("halfbit").freq
    fractions = [h.extras["mode_power_fractions"] for h in halves]
    print(f"P25 half-bit: one mode {r1:.3f}, three modes {r3:.3f} cyc/px; fractions "
          f"{np.round(fractions, 3).tolist()}")
    assert r3 >= r1, (r1, r3)
