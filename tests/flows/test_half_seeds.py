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


def test_each_half_gets_its_own_seed_and_step_key(tmp_path, monkeypatch):
    data = simulate("farfield", frame_size=32, n_positions=16, seed=0)
    # a file with its probe: calibration takes it (no blind estimate), the test stays fast
    data = dataclasses.replace(data, probe=data.ground_truth["probe"])
    cxi = write_cxi(tmp_path / "x.cxi", data)
    p = PipelineParams(input=str(cxi), store=str(tmp_path / "r.zarr"),
                       engine=EngineParams(engine="rnf", seed=7))  # fmt: skip
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    stages.calibrate(p.store, p.calibration)
    (tile, *_) = stages.plan(p.store, p.tiling)
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
