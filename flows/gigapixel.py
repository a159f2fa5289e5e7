"""The ``gigapixel-coded`` flow: a coded-ptychography dataset split into many detector
tiles, reconstructed across the GPU workers of a Dask cluster, resumable.

It is the pipeline with defaults for this job (many tiles, ``local_cuda`` workers) and two
checks around it: the dataset must be coded, and a re-run reports how many tiles the run
store already holds -- those are skipped, so an interrupted batch continues where it
stopped. A lost worker is covered by the tile tasks' own retries (Dask reschedules the
tile elsewhere); a crashed flow run (its job's wall time, a node failure) by running the
deployment again with the same parameters, by hand or by a Prefect automation on the
``Crashed`` state (docs/operations.md).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import Field

from flows.params import ClusterParams, ConfigError, EngineParams, PipelineParams, TilingParams
from flows.pipeline import pipeline
from flows.tasks import ingest_task
from flows.tile_steps import tile_fingerprint, tile_step
from ptytasks.modalities import get as get_modality
from storage import layout as L
from storage.lock import StoreLock
from storage.readers import read_any
from storage.store import RunStore


class GigapixelParams(PipelineParams):
    """Pipeline parameters with gigapixel defaults: an 8x8 tile grid on GPU workers."""

    tiling: TilingParams = Field(
        default_factory=lambda: TilingParams(grid=(8, 8)),
        description="Detector tiles along (y, x); each is one GPU task.",
    )
    engine: EngineParams = Field(default_factory=EngineParams)  # the default engine, RNF
    cluster: ClusterParams = Field(
        default_factory=lambda: ClusterParams(kind="local_cuda"),
        description="GPU workers: 'local_cuda' (one per visible GPU) or 'address' of a "
        "dask-cuda/dask-jobqueue scheduler.",
    )


def resume_state(store_path: str, halves: tuple[str, ...] = ("",),
                 params: GigapixelParams | None = None) -> dict:
    """``{"planned", "done"}`` tile counts already in the run store (0, 0 when new); with
    the run's ``params`` only tiles made under them (a stale tile is recomputed)."""
    try:
        store = RunStore(store_path, "r")
    except Exception:  # noqa: BLE001 - no store yet: nothing to resume
        return {"planned": 0, "done": 0}
    if not store.is_complete(L.TILING):
        return {"planned": 0, "done": 0}
    tiles = store.root[L.TILING].attrs["tiles"]
    mod = get_modality(store.root[L.RAW].attrs["modality"])
    done = sum(store.is_complete(tile_step(t["tile_id"], h), None if params is None else
                                 tile_fingerprint(t, params.engine, params.calibration, h, mod))
               for t in tiles for h in halves)  # fmt: skip
    return {"planned": len(tiles) * len(halves), "done": int(done)}


@flow(name="gigapixel-coded")
def gigapixel_coded(params: GigapixelParams) -> dict:
    """Reconstruct a (large) coded-ptychography dataset tile by tile on GPU workers.

    A new run with the same parameters resumes: finished tiles, the stitched mosaic and
    every other complete step are kept in the store and skipped.
    """
    from prefect.runtime import flow_run

    # The lock before the first write (ingest): the pipeline below re-enters it.
    command = f"gigapixel-coded flow run {flow_run.name} ({flow_run.id})"
    with StoreLock(params.store, command):
        return _gigapixel_coded(params)


def _gigapixel_coded(params: GigapixelParams) -> dict:
    log = get_run_logger()
    # the file's modality from its header (a lazy read), before hours of streaming it in
    modality = read_any(params.input, lazy=True, **params.ingest.reader_options()).modality
    if not get_modality(modality).has_surface:  # tiles are full coded frames
        raise ConfigError(f"{params.input}: gigapixel-coded needs coded data, got "
                          f"{modality!r}; use the pipeline deployment")  # fmt: skip
    ingest_task(params.input, params.store, params.ingest)
    halves = ("", "a", "b") if params.evaluation.half_data else ("",)
    state = resume_state(params.store, halves, params.with_absolute_paths())
    if state["done"]:
        log.info("resuming: %d of %d tiles already reconstructed", state["done"],
                 state["planned"])  # fmt: skip
    result = pipeline(params)
    reused = sum(bool(r.get("skipped")) for r in result["tiles"])
    log.info("%d tiles, %d reused from the store", len(result["tiles"]), reused)
    return {**result, "reused_tiles": reused}
