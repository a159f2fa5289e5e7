"""docs/extending.md, executed: an engine registered from outside the package runs
through the pipeline's stages with no other module touched, and a modality plug-in is
asked by the modules that used to compare names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from flows.params import EngineParams, PipelineParams
from ptytasks.engines import registry
from ptytasks.engines.options import EngineOptions
from ptytasks.engines.result import ReconstructionResult
from ptytasks.simulate import simulate
from storage.cxi import write_cxi
from storage.store import RunStore
from tests.stage_runner import run_stages


@dataclass
class FlatOptions(EngineOptions):
    """A toy engine: the object is a flat ``level`` (it ignores the frames)."""

    level: float = 0.5
    seed: int = 0


def _run_flat(name, data, settings, priors, callback, checkpoint):
    opts = registry.options_from(FlatOptions, settings, {})
    epochs = int(settings.get("epochs", 1))
    for epoch in range(epochs):
        callback(epoch, {"loss": 0.0})
    return ReconstructionResult(
        object=np.full(data.object_shape, opts.level, np.complex64), probe=priors.probe,
        positions_px=data.positions_px, loss_history=[0.0] * epochs, engine=name,
        options=opts.to_dict(),
    )  # fmt: skip


FLAT = registry.EngineSpec("flat", lambda name, mod: FlatOptions, _run_flat,
                           lambda mod: mod.localized_probe, "a flat object (toy)",
                           object_prior=False)  # fmt: skip


@pytest.fixture
def flat_engine(monkeypatch):
    monkeypatch.setitem(registry.SPECS, "flat", FLAT)  # registry.register, undone after
    return FLAT


def test_a_registered_engine_runs_through_the_pipeline(tmp_path, flat_engine):
    d = simulate("farfield", seed=3, n_positions=16, frame_size=32)
    cxi = write_cxi(tmp_path / "f.cxi", d)
    p = PipelineParams(input=str(cxi), store=str(tmp_path / "f.zarr"),
                       engine=EngineParams(engine="flat", epochs=2,
                                           options={"level": 0.25}))  # fmt: skip
    tiles = run_stages(p, evaluate=False)
    store = RunStore.open(p.store)
    tile = store.read_group(f"reconstruct/{tiles[0]['tile_id']}")
    assert np.allclose(tile["object"], 0.25)
    mosaic = store.read_group("mosaic/level_0")
    lit = mosaic["weight"] > 0.5 * mosaic["weight"].max()
    assert lit.any() and np.allclose(mosaic["object"][lit], 0.25, atol=1e-3)


def test_a_registered_engine_is_checked_against_its_modalities(flat_engine):
    fp = simulate("fourier", image_size=24, upsample=4, na_illum=0.25)
    with pytest.raises(ValueError, match="does not run 'fourier'.*rnf"):
        registry.run_engine("flat", fp, {"epochs": 1})
    with pytest.raises(ValueError, match="FlatOptions has no option"):
        registry.run_engine("flat", simulate("farfield", seed=0, n_positions=9, frame_size=32),
                            {"epochs": 1, "levl": 0.3})  # fmt: skip


def test_unregistered_engines_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown engine 'flat'.*rnf, epie"):
        EngineParams(engine="flat")
