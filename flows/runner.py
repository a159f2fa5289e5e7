"""Running the pipeline flow from the command line: the store's lock and the input checked
before anything else, one Prefect API for the whole run, a progress bar fed by the run
store, and the metrics written as a table beside the store."""

from __future__ import annotations

import csv
import os
import sys
import threading
from pathlib import Path

from flows.checks import check_runnable
from flows.params import PipelineParams
from flows.tile_steps import epoch_progress_path, tile_fingerprint, tile_step
from storage import layout as L

FIXED_STEPS = (L.RAW, L.SUBSAMPLE, L.PRIORS, L.TILING)
READING_NOTE_S = 1.0  # seconds of reading the input before the command says it is


def store_progress(store_path: str | Path, halves: tuple[str, ...] = ("",),
                   params: PipelineParams | None = None) -> tuple[float, int]:
    """``(done, total)`` steps of a run in progress, read from the store's markers.

    ``total`` counts the fixed steps, one per (tile, half), the mosaics and metrics; before
    tiles are planned it counts one tile. A tile being reconstructed counts the fraction of
    its epochs done (the engines' epoch callback writes it beside the store), so the bar
    moves during long tiles. With the run's ``params`` a tile counts done only when its
    marker has the fingerprint this run gives it (a marker left by a run under other
    settings is recomputed, so it is not progress), and the mosaics and metrics only once
    every tile is. Incomplete or missing stores read as nothing done: a reader may race
    the writer, so every error is "not yet".
    """
    from storage.store import RunStore

    n_fixed = len(FIXED_STEPS) + len(halves) + 1
    try:
        store = RunStore(store_path, "r")
        done = sum(store.marker(s) is not None for s in FIXED_STEPS)
        tiles = _planned(store)
        current = _current_tile(store, params)
        n_tiles = 0
        for t in tiles:
            for h in halves:
                step = tile_step(t["tile_id"], h)
                ok = current(step, t, h)
                n_tiles += ok
                done += 1.0 if ok else _epochs_done(store_path, step)
        if n_tiles == len(tiles) * len(halves):
            mosaics = [f"{L.MOSAIC}{'_' + h if h else ''}" for h in halves]
            done += sum(store.marker(m) is not None for m in mosaics)
            done += store.marker(L.METRICS) is not None
    except Exception:  # noqa: BLE001 - store not there yet or being rewritten
        return 0, n_fixed + len(halves)
    return done, n_fixed + max(1, len(tiles)) * len(halves)


_PLANS: dict = {}  # tiling step key -> planned tiles (a 512^2 scan's plan is megabytes)


def _planned(store) -> list[dict]:
    marker = store.marker(L.TILING)
    if marker is None:
        return []
    if marker["key"] not in _PLANS:
        _PLANS.clear()
        _PLANS[marker["key"]] = list(store.root[L.TILING].attrs["tiles"])
    return _PLANS[marker["key"]]


_FPS: dict = {}  # (parameters, plan, tile, half) -> fingerprint: ~1 ms each, every poll


def _current_tile(store, params: PipelineParams | None):
    """``done(step, tile, half)``: the tile's marker is there (and, with ``params``, has
    the fingerprint this run gives the tile)."""
    if params is None:
        return lambda step, t, h: store.marker(step) is not None
    from ptytasks.modalities import get as get_modality

    mod = get_modality(store.root[L.RAW].attrs["modality"])
    run = (params.model_dump_json(), store.marker(L.TILING)["key"], mod.name)
    if any(k[:3] != run for k in _FPS):
        _FPS.clear()

    def fp(t, h):
        key = (*run, t["tile_id"], h)
        if key not in _FPS:
            _FPS[key] = tile_fingerprint(t, params.engine, params.calibration, h, mod)
        return _FPS[key]

    return lambda step, t, h: store.is_complete(step, fp(t, h))


def _epochs_done(store_path, step: str) -> float:
    """Fraction of a running tile's epochs done (0 when unknown)."""
    try:
        done, total = epoch_progress_path(str(store_path), step).read_text().split()
        return min(1.0, int(done) / max(1, int(total))) * 0.99  # complete only when stored
    except (OSError, ValueError):
        return 0.0


def quiet_prefect_console() -> None:
    """Only warnings on Prefect's console, here and in the Dask workers started later
    (they inherit the variable); logs still go to the API and the UI in full."""
    import logging

    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
    for name in ("", "prefect", "uvicorn"):
        for h in logging.getLogger(name).handlers:
            if type(h).__name__ == "PrefectConsoleHandler":
                h.setLevel(logging.WARNING)


def run_pipeline(params: PipelineParams, *, progress: bool = True, verbose: bool = False) -> dict:
    """Run the ``pipeline`` flow in this process against one Prefect API.

    Parameters
    ----------
    params : the validated pipeline parameters.
    progress : show a progress bar (steps and tiles done, polled from the run store).
    verbose : keep Prefect's INFO logs on the console (they always go to the API).

    Returns
    -------
    The flow's summary: ``{"store", "tiles", "metrics"}``.

    Raises
    ------
    storage.lock.StoreLockedError
        Another run holds the store (checked before any Prefect server starts).
    storage.errors.DataError
        The input is unreadable or invalid (found by :func:`ingest_input`, before Prefect).
    """
    from storage.lock import StoreLock

    with StoreLock(params.store):  # held for the whole run; the flow re-enters it
        # the bar starts with the flow, and a large file streams in for minutes: say so
        # when it takes a while (bad input fails at once, in one line)
        note = threading.Timer(READING_NOTE_S, print, (f"reading {params.input} into "
                               f"{params.store} ...",), {"file": sys.stderr, "flush": True})
        note.daemon = True
        if progress:
            note.start()
        try:
            raw = ingest_input(params)
        finally:
            note.cancel()
        check_runnable(params, raw["modality"])
        return _run_flow(params, progress=progress, verbose=verbose)


def ingest_input(params: PipelineParams) -> dict:
    """The pipeline's ``raw`` step, run before Prefect starts: bad input is a one-line
    :class:`~storage.errors.DataError` (file and field) instead of failed flow and task
    runs, and the flow's own ingest then finds the step done (same fingerprint) and skips.

    Uses :func:`flows.stages.ingest`, the very validation of ``ptyflow ingest``; reader
    option errors (``ValueError``/``TypeError``) become ``DataError`` of ``ingest.options``.
    """
    from flows.stages import ingest
    from storage.errors import DataError

    try:
        return ingest(params.input, params.store, params.ingest)
    except DataError:
        raise
    except (ValueError, TypeError) as exc:
        raise DataError(params.input, "ingest.options", str(exc)) from exc


def _run_flow(params: PipelineParams, *, progress: bool, verbose: bool) -> dict:
    from flows.serve import prefect_api

    if not verbose:
        quiet_prefect_console()
    own = not os.environ.get("PREFECT_API_URL")
    with prefect_api() as url:
        if own and verbose:
            print(f"ptyflow: temporary Prefect API {url} for this run and its workers",
                  file=sys.stderr, flush=True)  # fmt: skip
        from flows.pipeline import pipeline

        if not verbose:
            quiet_prefect_console()  # again: importing Prefect (re)configured logging
        if not progress:
            return pipeline(params)
        return _with_progress(params, pipeline)


def _with_progress(params: PipelineParams, pipeline) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    halves = ("", "a", "b") if params.evaluation.half_data else ("",)
    keyed = params.with_absolute_paths()  # the tiles' fingerprints, as the flow makes them
    stop = threading.Event()
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn())  # fmt: skip
    with Progress(*cols, transient=False) as bar:
        task = bar.add_task(f"{Path(params.store).name}", total=None)

        def poll() -> None:
            # A thread, not a callback: the stages run in Dask workers, the store is the
            # one place every process writes its progress to.
            while not stop.wait(0.5):
                done, total = store_progress(params.store, halves, keyed)
                bar.update(task, completed=done, total=total)

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        try:
            result = pipeline(params)
        finally:
            stop.set()
            t.join()
        done, total = store_progress(params.store, halves, keyed)
        bar.update(task, completed=done, total=total)
    return result


def write_metrics_table(metrics: dict, path: str | Path) -> Path:
    """``metric,value`` CSV of the run's metrics (``path`` replaced whole: a reader sees
    the old table or the new one, never half of it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "value"])
            for k, v in metrics.items():
                w.writerow([k, f"{v:.6g}" if isinstance(v, float) else v])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def demo_dataset(path: str | Path, seed: int = 1) -> Path:
    """A small noisy far-field dataset with a known probe, written as CXI."""
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    data = simulate("farfield", seed=seed, known_probe=True, dose=1e6)
    write_cxi(path, data)
    return Path(path)
