"""The annealed position search (:mod:`ptytasks.engines.position_search`): errors beyond
the refinement's reach come down to where it takes over."""

from __future__ import annotations

import numpy as np
import pytest

from ptytasks.engines.position_search import PositionSearchOptions, search_positions
from ptytasks.engines.registry import run_engine
from ptytasks.simulate.datasets import simulate


def affine_rms(found, true) -> float:
    a = np.hstack([found, np.ones((len(found), 1))])
    coef, *_ = np.linalg.lstsq(a, true, rcond=None)
    return float(np.sqrt(((a @ coef - true) ** 2).sum(1).mean()))


@pytest.fixture(scope="module")
def scrambled():
    """30 frames of 32^2, 2.5 px RMS random position errors (the probe ~11 px across)."""
    d = simulate("farfield", seed=4, frame_size=32, n_positions=30, dose=1e6,
                 position_error_px=2.5)  # fmt: skip
    return d, np.asarray(d.ground_truth["positions_px"])


def test_search_brings_scrambled_positions_close(scrambled):
    """Measured: affine RMS 2.42 -> 0.36 px (radius 5, prior 2.5, 15 epochs, ~3 s); with
    uniform weights (every candidate alike: ``t_start = t_end = 1e9``, no prior) the
    positions stay scrambled."""
    d, true = scrambled
    opts = PositionSearchOptions(radius=5, prior_px=2.5, epochs=15, blur_px=1.5)
    found = search_positions(d, d.ground_truth["probe"], opts)
    before, after = affine_rms(d.positions_px, true), affine_rms(found, true)
    print(f"search: affine RMS {before:.2f} -> {after:.2f} px")
    assert after < 0.35 * before


def test_run_engine_searches_first_and_names_a_missing_probe(scrambled):
    d, true = scrambled
    opts = {"radius": 5, "prior_px": 2.5, "epochs": 15, "blur_px": 1.5}
    r = run_engine("rpie", d, {"epochs": 30, "learn_positions": True, "position_search": opts},
                   probe_prior=d.ground_truth["probe"])  # fmt: skip
    assert affine_rms(r.positions_px, true) < 0.35 * affine_rms(d.positions_px, true)
    with pytest.raises(ValueError, match="position_search needs a probe"):
        run_engine("rpie", d, {"epochs": 1, "position_search": True})


def test_the_search_settings_enter_the_step_key_only_where_it_runs():
    """A changed search default must not let a store serve tiles searched under the old
    one; runs without the search keep the keys they had."""
    from dataclasses import asdict

    from flows.params import EngineParams

    plain = EngineParams(engine="rpie").key()
    searched = EngineParams(engine="rpie", options={"position_search": True}).key()
    assert "position_search_defaults" not in plain
    assert searched["position_search_defaults"] == asdict(PositionSearchOptions())
