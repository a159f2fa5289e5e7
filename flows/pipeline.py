"""The ``pipeline`` flow: ingest -> subsample -> calibrate -> tiles on Dask -> stitch ->
evaluate, every step persisted in the run store and skipped when already done."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import dask
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.checks import check_runnable
from flows.cluster import GPU_RESOURCE, make_task_runner, torch_threads
from flows.config_sources import ConfigError
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
from storage.errors import DataError
from storage.lock import StoreLock


class TileFailure(RuntimeError):
    """One or more tiles failed; finished tiles stay in the store."""


# Retried once by the pipeline (a cluster that fails to start, a worker process dying on
# a loaded machine): finished tiles are skipped by their store markers. Not by Prefect's
# flow retries, which have no condition: a bad setting would run every tile again.
@flow(name="reconstruct-tiles")
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
                failures.append((f"{t}{h}", exc))
    if failures:
        setting = [e for _, e in failures if isinstance(e, DataError | ConfigError)]
        if len(setting) == len(failures):  # a bad input or setting: the same again anywhere
            get_run_logger().error("%d tile(s) failed on the input or a setting: %s",
                                   len(failures), ", ".join(t for t, _ in failures))
            raise setting[0]
        raise TileFailure("; ".join(f"tile {t}: {type(e).__name__}: {e}" for t, e in failures))
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
    params = params.with_absolute_paths()  # workers may have another working directory
    store = params.store
    raw = ingest_task(params.input, store, params.ingest)
    log.info("ingested %d %s frames", raw["n_frames"], raw["modality"])
    # `ptyflow run` checked these before Prefect; a run from the UI or a deployment comes
    # here directly, and without this found them only inside a tile, after calibration
    check_runnable(params, raw["modality"])
    sub = subsample_task(store, params.subsample)
    log.info("kept %d of %d frames", sub["n_kept"], sub["n_frames"])
    calibrate_task(store, params.calibration)
    tiles = plan_task(store, params.tiling)
    halves = [""] + (["a", "b"] if params.evaluation.half_data else [])
    args = (store, tiles, params.engine, params.calibration, halves,
            torch_threads(params.cluster))  # fmt: skip
    try:
        refs = reconstruct_tiles.with_options(task_runner=make_task_runner(params.cluster))(*args)
    except TileFailure as exc:  # once more, on a fresh cluster; done tiles are skipped
        log.warning("retrying the failed tiles once: %s", exc)
        refs = reconstruct_tiles.with_options(task_runner=make_task_runner(params.cluster))(*args)
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
