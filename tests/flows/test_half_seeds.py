"""Half-data reconstructions are independent: each half starts from its own seed.

With one seed two RNF halves start from the same hash tables and MLP weights, and what
the data leave unconstrained comes out alike in both; the half-data FRC then reads that
shared start as resolution (the Siemens star's RNF halves "agreed" up to Nyquist,
0.5 cycles/pixel, with 40 epochs of the star config).
"""

from __future__ import annotations

import dataclasses

import pytest

import ptytasks.engines.registry as registry
from flows import stages
from flows.params import EngineParams, PipelineParams
from ptytasks.simulate import simulate
from storage.cxi import write_cxi


class _Captured(Exception):
    pass


def _planned(tmp_path, data, engine: EngineParams):
    """``data`` written, ingested, subsampled, calibrated and planned; the params and the
    first tile."""
    cxi = write_cxi(tmp_path / "x.cxi", data)
    p = PipelineParams(input=str(cxi), store=str(tmp_path / "r.zarr"), engine=engine)
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    stages.calibrate(p.store, p.calibration)
    (tile, *_) = stages.plan(p.store, p.tiling)
    return p, tile


def test_each_half_gets_its_own_seed_and_step_key(tmp_path, monkeypatch):
    data = simulate("farfield", frame_size=32, n_positions=16, seed=0)
    # a file with its probe: calibration takes it (no blind estimate), the test stays fast
    data = dataclasses.replace(data, probe=data.ground_truth["probe"])
    p, tile = _planned(tmp_path, data, EngineParams(engine="rnf", seed=7))
    seeds, ckpts = {}, {}

    def fake_run_engine(name, data, settings, **kw):
        seeds[current], ckpts[current] = settings["seed"], kw.get("checkpoint")
        raise _Captured

    monkeypatch.setattr(registry, "run_engine", fake_run_engine)
    for current in ("", "a", "b"):
        with pytest.raises(_Captured):
            stages.reconstruct_tile(p.store, tile, p.engine, p.calibration, half=current)
    assert seeds[""] == 7
    assert len({seeds[""], seeds["a"], seeds["b"]}) == 3
    # the seed is part of each half's step key (a result made with one seed is not reused)
    assert len({ckpts[""], ckpts["a"], ckpts["b"]}) == 3


def test_each_half_estimates_its_own_blind_probe(tmp_path, monkeypatch):
    """With no stored probe the calibration's blind probe comes from all frames; a half
    that started from it would share the other half's data (and the probe's errors)."""
    import numpy as np

    import ptytasks.calibration as cal

    data = simulate("farfield", frame_size=32, n_positions=16, seed=0)
    assert data.probe is None
    cxi = write_cxi(tmp_path / "x.cxi", data)
    p = PipelineParams(input=str(cxi), store=str(tmp_path / "r.zarr"),
                       engine=EngineParams(engine="rpie"))  # fmt: skip
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    # a cheap stand-in for the blind estimate that says which frames it saw
    monkeypatch.setattr(cal, "mean_pattern_probe",
                        lambda d: np.full(d.frame_shape, d.n_frames, np.complex64))  # fmt: skip
    stages.calibrate(p.store, p.calibration)
    (tile, *_) = stages.plan(p.store, p.tiling)
    starts = {}

    def fake_run_engine(name, data, settings, **kw):
        starts[current] = (data.n_frames, float(kw["probe_prior"].real.max()))
        raise _Captured

    monkeypatch.setattr(registry, "run_engine", fake_run_engine)
    for current in ("", "a", "b"):
        with pytest.raises(_Captured):
            stages.reconstruct_tile(p.store, tile, p.engine, p.calibration, half=current)
    n = starts[""][0]
    assert starts[""] == (n, n)  # the full run: the calibrated prior, from all frames
    for h in ("a", "b"):  # each half: a probe from its own frames only
        assert starts[h][0] < n and starts[h][1] == starts[h][0], starts


def test_fourier_halves_are_the_modality_split_and_keyed_by_its_rule(tmp_path, monkeypatch):
    """Each Fourier half gets the LED checkerboard of the whole set (the modality's
    ``half_split``), and the rule's name is in the step key: a store made under another
    split never reuses its halves."""
    import numpy as np

    from ptytasks.modalities import modality_of

    data = simulate("fourier", image_size=32, seed=0)
    p, tile = _planned(tmp_path, data, EngineParams(engine="rpie"))
    seen, ckpts = {}, {}

    def fake_run_engine(name, data, settings, **kw):
        seen[current], ckpts[current] = np.asarray(data.wavevectors), kw.get("checkpoint")
        raise _Captured

    monkeypatch.setattr(registry, "run_engine", fake_run_engine)
    mod = modality_of(data)
    for current in ("a", "b"):
        with pytest.raises(_Captured):
            stages.reconstruct_tile(p.store, tile, p.engine, p.calibration, half=current)
    for current, idx in zip(("a", "b"), mod.half_split(data), strict=True):
        np.testing.assert_allclose(seen[current], np.asarray(data.wavevectors)[idx], rtol=1e-6)
    key_a = ckpts["a"]
    monkeypatch.setattr(type(mod), "half_split_rule", "another-split")
    current = "a"
    with pytest.raises(_Captured):
        stages.reconstruct_tile(p.store, tile, p.engine, p.calibration, half="a")
    assert ckpts["a"] != key_a
