"""The pipeline's stages with ``evaluation.half_data`` as plain calls in this process
(``flows.stages``: the stages of ``ptyflow run`` without Prefect), for the real-data tests."""

from __future__ import annotations

import time
from pathlib import Path

from flows import stages
from flows.params import PipelineParams
from storage import layout as L
from storage.store import RunStore


def half_data_run(path: Path, store: Path, config: Path | None = None, **overrides) -> dict:
    """Run every tile from all its frames and from two interleaved halves (their own
    seeds), stitch the three, evaluate. Returns the half-data FRC resolution (standard
    first half-bit crossing, cycles per pixel), the first tile's probe shape and mode power
    fractions, and the wall time."""
    overrides = {**overrides, "evaluation": {**overrides.get("evaluation", {}), "half_data": True}}
    kw = {"input": str(path), "store": str(store), **overrides}
    p = PipelineParams.from_yaml(config, **kw) if config else PipelineParams(**kw)
    t0 = time.perf_counter()
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    stages.calibrate(p.store, p.calibration)
    tiles = stages.plan(p.store, p.tiling)
    for half in ("", "a", "b"):
        for t in tiles:
            stages.reconstruct_tile(p.store, t, p.engine, p.calibration, half=half)
        stages.stitch(p.store, tiles, half=half)
    values = stages.evaluate(p.store, p.evaluation)
    s = RunStore(p.store, "r")
    tile = s.root[f"{L.RECONSTRUCT}/{tiles[0]['tile_id']}"]
    return {"frc": values["halfdata_frc_resolution"],
            "probe_shape": tile["probe"].shape if "probe" in tile else None,  # FPM: none
            "fractions": tile.attrs.get("mode_power_fractions"),
            "seconds": time.perf_counter() - t0}  # fmt: skip
