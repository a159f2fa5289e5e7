"""The blind near-field probe's trial (``blind_nearfield_probe``) on tuning objects of the
grid's near-field geometry at 1e6 photons per frame (hypothesis 27; the grid scores seeds
1-3, these are its tuning seeds' kind of case, never scored).

``gravel`` (seed 105) leaves the flat-phase trap only after ~550 epochs: with the former
300-epoch cap its probe error was 0.85 and rPIE's error downstream 0.14 (0.034 from the
true probe); now 0.095. ``moon`` (seed 103), a smooth object, stays trapped (0.94) and
must be flagged so the run warns.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import grid_cells as G
from ptytasks.engines.blind_probe import blind_nearfield_probe


def _probe_error(p, t) -> float:
    p, t = p.ravel().astype(np.complex128), t.ravel().astype(np.complex128)
    c = np.vdot(p, t) / np.vdot(p, p)  # best complex scale
    return float(np.linalg.norm(c * p - t) / np.linalg.norm(t))


@pytest.mark.parametrize(("seed", "kind", "good"), [(105, "gravel", True), (103, "moon", False)])
def test_trial_leaves_a_slow_trap_and_flags_a_stuck_one(seed, kind, good):
    data = G.simulate_case(G.cell("nf-100-1e6"), seed, kind)[0]
    probe, rep = blind_nearfield_probe(data)
    err = _probe_error(probe, data.ground_truth["probe"])
    if good:  # measured 0.095 at 812 epochs; trapped 0.85
        assert err < 0.2 and rep["escaped"], (err, rep["epochs"])
    else:  # measured 0.94, flagged: the run warns
        assert err > 0.5 and not rep["escaped"], (err, rep["epochs"])
