"""Prefect tasks: thin wrappers over :mod:`flows.stages` (store path in, small dict out)."""

from __future__ import annotations

import time

from prefect import get_run_logger, task

from flows import stages
from flows.params import (
    CalibrationParams,
    ConfigError,
    EngineParams,
    EvaluationParams,
    IngestParams,
    SubsampleParams,
    TilingParams,
)
from storage.errors import DataError


def worth_retrying(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: a bad input file or setting fails the same way
    again, so only other failures (a worker lost, a file system hiccup) are retried."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result: retry as before
        return True
    return not isinstance(exc, DataError | ConfigError)


@task(name="ingest", retries=1, retry_delay_seconds=2, retry_condition_fn=worth_retrying)
def ingest_task(input_path: str, store_path: str, params: IngestParams) -> dict:
    return stages.ingest(input_path, store_path, params)


@task(name="subsample")
def subsample_task(store_path: str, params: SubsampleParams) -> dict:
    return stages.subsample(store_path, params)


@task(name="calibrate", retries=1, retry_condition_fn=worth_retrying)
def calibrate_task(store_path: str, params: CalibrationParams) -> dict:
    return stages.calibrate(store_path, params)


@task(name="plan-tiles")
def plan_task(store_path: str, params: TilingParams) -> list[str]:
    """The planned tiles' ids: the plan itself (each tile's frame list) stays in the store."""
    return [t["tile_id"] for t in stages.plan(store_path, params)]


def _worker_info() -> dict:
    """Which Dask worker ran the task and how much of its GPU resource was in use."""
    try:
        from distributed import get_worker

        w = get_worker()
    except (ImportError, ValueError):
        return {"worker": None}
    return {"worker": w.address, "gpu_free": w.state.available_resources.get("GPU")}


@task(
    name="reconstruct-tile",
    task_run_name="reconstruct-{tile}{half}",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=worth_retrying,
)
def reconstruct_tile_task(
    store_path: str,
    tile: str,
    engine: EngineParams,
    calibration: CalibrationParams,
    half: str = "",
    torch_threads: int | None = None,
) -> dict:
    """One tile (its id in the store's plan) on one worker (which holds the ``GPU``
    resource while it runs)."""
    logger = get_run_logger()
    every = max(1, engine.epochs // 10)
    t0 = time.perf_counter()

    def progress(epoch: int, info: dict) -> None:
        if epoch % every == 0 or epoch == engine.epochs - 1:
            logger.info(
                "tile %s%s epoch %d/%d loss %.4g (%.1f s)", tile, half, epoch + 1,
                engine.epochs, info.get("loss", float("nan")), time.perf_counter() - t0,
            )  # fmt: skip

    ref = stages.reconstruct_tile(store_path, tile, engine, calibration, half=half,
                                  torch_threads=torch_threads, progress=progress)  # fmt: skip
    return {**ref, **_worker_info(), "tile_id": tile, "half": half}


@task(name="stitch", retries=1, retry_condition_fn=worth_retrying)
def stitch_task(store_path: str, tiles: list[str], half: str = "") -> dict:
    return stages.stitch(store_path, tiles, half=half)


@task(name="evaluate")
def evaluate_task(store_path: str, params: EvaluationParams) -> dict:
    return stages.evaluate(store_path, params)
