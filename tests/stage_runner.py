"""The pipeline's stages as plain function calls, in this process (no Prefect, no Dask)."""

from __future__ import annotations

from flows import stages


def run_stages(p, *, evaluate: bool = True) -> list[dict]:
    """Ingest, subsample, calibrate, plan, reconstruct every tile and stitch the run of
    ``p`` (a :class:`flows.params.PipelineParams`), then evaluate unless ``evaluate`` is
    False. Returns the tiles."""
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    stages.calibrate(p.store, p.calibration)
    tiles = stages.plan(p.store, p.tiling)
    for t in tiles:
        stages.reconstruct_tile(p.store, t, p.engine, p.calibration)
    stages.stitch(p.store, tiles)
    if evaluate:
        stages.evaluate(p.store, p.evaluation)
    return tiles
