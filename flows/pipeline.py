"""The ``pipeline`` flow: ingest -> subsample -> calibrate -> tiles on Dask -> stitch ->
evaluate, every step persisted in the run store and skipped when already done."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import dask
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.cluster import GPU_RESOURCE, make_task_runner, torch_threads
from flows.params import (
    CalibrationParams,
    EngineParams,
    PipelineParams,
)
from flows.tasks import (
    calibrate_task,
    evaluate_task,
    ingest_task,
    plan_task,
    reconstruct_tile_task,
    stitch_task,
    subsample_task,
)
from storage.lock import StoreLock


class TileFailure(RuntimeError):
    """One or more tiles failed; finished tiles stay in the store."""


# One retry: a cluster that fails to start (a worker process dying on a loaded machine)
# gets a second chance; finished tiles are skipped by their store markers.
@flow(name="reconstruct-tiles", retries=1, retry_delay_seconds=5)
def reconstruct_tiles(
    store_path: str,
    tiles: list[str],
    engine: EngineParams,
    calibration: CalibrationParams,
    halves: list[str],
    threads: int | None = None,
) -> list[dict]:
    """Every (tile, half) as an independent task asking for one ``GPU`` worker resource.
    ``tiles``: ids in the store's plan (a tile's frame list never travels as a parameter)."""
    with dask.annotate(resources=GPU_RESOURCE):
        futures = [
            reconstruct_tile_task.submit(
                store_path, t, engine, calibration, half=h, torch_threads=threads
            )  # fmt: skip
            for h in halves
            for t in tiles
        ]
    refs, failures = [], []
    for fut, (h, t) in zip(futures, [(h, t) for h in halves for t in tiles], strict=True):
        state = fut.wait() or fut.state
        if state.is_completed():
            refs.append(fut.result())
        else:
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - reported with its tile id below
                failures.append(f"tile {t}{h}: {type(exc).__name__}: {exc}")
    if failures:
        raise TileFailure("; ".join(failures))
    return refs


@flow(name="pipeline", log_prints=True)
def pipeline(params: PipelineParams) -> dict:
    """Reconstruct one dataset end to end into the run store ``params.store``.

    Returns a small summary: steps, tile references and metrics. Holds the store's lock
    (:mod:`storage.lock`) throughout: a second run into the same store fails at once with
    ``StoreLockedError`` naming this one.
    """
    from prefect.runtime import flow_run

    command = f"pipeline flow run {flow_run.name} ({flow_run.id}): {shlex.join(sys.argv)}"
    with StoreLock(params.store, command):  # re-entered when `ptyflow run` holds it
        return _pipeline(params)


def _pipeline(params: PipelineParams) -> dict:
    log = get_run_logger()
    store = params.store
    raw = ingest_task(params.input, store, params.ingest)
    log.info("ingested %d %s frames", raw["n_frames"], raw["modality"])
    sub = subsample_task(store, params.subsample)
    log.info("kept %d of %d frames", sub["n_kept"], sub["n_frames"])
    calibrate_task(store, params.calibration)
    tiles = plan_task(store, params.tiling)
    halves = [""] + (["a", "b"] if params.evaluation.half_data else [])
    runner = make_task_runner(params.cluster)
    refs = reconstruct_tiles.with_options(task_runner=runner)(
        store, tiles, params.engine, params.calibration, halves, torch_threads(params.cluster)
    )
    for h in halves:
        stitch_task(store, tiles, half=h)
    metrics = evaluate_task(store, params.evaluation)
    _artifacts(params, metrics, refs)
    return {"store": store, "tiles": refs, "metrics": metrics}


def _artifacts(params: PipelineParams, metrics: dict, refs: list[dict]) -> None:
    rows = [{"metric": k, "value": f"{v:.6g}"} for k, v in metrics.items()]
    create_table_artifact(key="metrics", table=rows, description="Reconstruction quality")
    stem = Path(params.store).stem
    previews = [Path(params.store).parent / f"{stem}_{p}.png" for p in ("amplitude", "phase")]
    skipped = sum(bool(r.get("skipped")) for r in refs)
    md = [
        f"# ptyflow run `{stem}`",
        f"- input: `{params.input}`",
        f"- engine: **{params.engine.engine}**, {params.engine.epochs} epochs, "
        f"tiles {params.tiling.grid[0]}x{params.tiling.grid[1]} ({skipped} reused)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {r['metric']} | {r['value']} |" for r in rows],
        "",
        *[f"- preview: [{p.name}]({p.resolve().as_uri()})" for p in previews if p.exists()],
    ]
    create_markdown_artifact(key="summary", markdown="\n".join(md), description="Run summary")
