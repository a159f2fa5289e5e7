"""The learned engine's output was silently wrong where its input differs from training
(audit of the learned networks): a masked module gap, a stored probe in other units, a
probe of another footprint, a mixed-state probe's flux."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from ptytasks.engines.registry import run_engine
from ptytasks.metrics.errors import complex_error
from ptytasks.simulate.datasets import simulate


@pytest.fixture(scope="module")
def ff32():
    # the default weights' geometry (32 px frames, an 11.2 px zone plate)
    return simulate("farfield", frame_size=32, n_positions=16, dose=1e6, known_probe=True,
                    probe_diameter_px=11.2, seed=0)  # fmt: skip


def _err(data, probe, truth):
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        r = run_engine("learned", data, {}, probe_prior=probe)
    from bench.bench_learned import region

    return complex_error(r.object, truth, region(data)), [str(w.message) for w in ws], r


def test_a_masked_module_gap_is_bridged_not_read_as_diffraction(ff32):
    truth = ff32.ground_truth["object"]
    clean, _, _ = _err(ff32, ff32.probe, truth)
    f = np.array(ff32.frames)
    use = np.ones(ff32.frame_shape, bool)
    use[15:17, :] = use[:, 15:17] = False  # a module gap through the centre, zeros
    f[:, ~use] = 0
    gap, _, _ = _err(dataclasses.replace(ff32, frames=f, meta={**ff32.meta, "mask": use}),
                     ff32.probe, truth)  # fmt: skip
    assert gap <= 1.1 * clean, (gap, clean)


def test_a_stored_probe_in_other_units_is_noticed_and_the_frames_flux_used(ff32):
    truth = ff32.ground_truth["object"]
    right, _, _ = _err(ff32, ff32.probe, truth)
    unit = ff32.probe / np.sqrt(np.sum(np.abs(ff32.probe) ** 2))
    err, msgs, _ = _err(ff32, unit, truth)
    assert any("other units" in m for m in msgs), msgs
    assert err <= 1.1 * right, (err, right)


def test_a_probe_of_another_footprint_warns_even_without_resampling():
    d = simulate("farfield", frame_size=32, n_positions=16, overlap=0.3, dose=1e6,
                 known_probe=True, probe_diameter_px=28.8, seed=1)  # fmt: skip
    _, msgs, r = _err(d, d.probe, d.ground_truth["object"])
    assert r.extras["frame_mapping"]["mode"] == "none"
    assert any("footprint" in m for m in msgs), msgs


def test_a_mixed_state_probe_gives_the_flux_of_every_mode():
    d = simulate("farfield", frame_size=32, n_positions=16, overlap=0.6, dose=1e6,
                 known_probe=True, mode_fractions=(0.6, 0.3, 0.1), seed=2)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = run_engine("learned", d, {}, probe_prior=d.probe)
    assert r.extras["flux"] == pytest.approx(float(np.sum(np.abs(d.probe) ** 2)), rel=1e-3)
