"""Pipeline cost: what Prefect + Dask add per tile, worker scaling, memory, gigapixel time.

On simulated coded-ptychography data (the gigapixel flow's modality), tiled on the
detector, with the production engine (RNF) and one torch thread per worker:

* **compute**: each tile's engine call (``run_engine``) timed inside
  ``flows.stages.reconstruct_tile`` run in this process (a timing wrapper around the
  registry), against the stage's own total (store reads, priors, writes);
* **orchestration**: the ``reconstruct-tiles`` Prefect flow on a local Dask cluster with 1
  and then 2 worker processes, each against a fresh run store; a flow with no tiles on the
  same cluster kind gives the fixed cost (server round trips, cluster start and stop), so
  ``per-tile overhead = (T_flow(n) - T_flow(0)) / n - compute per tile`` (1 worker);
* **scaling** 1 -> 2 workers: ``(T_1 - T0_1) / (T_2 - T0_2)`` (2.0 is perfect);
* **memory**: peak RSS (sampled every 10 ms) of a fresh worker-like process while it
  reconstructs one tile, per tile size, and its increment over the RSS before the tile;
* **projection** to a 1-gigapixel coded field: core object pixels per second measured with
  2 workers (fixed cost excluded), scaled to 1e9 pixels, for 2 workers and per worker.

The overhead target (< 5 % of compute) refers to production tiles (minutes of compute
each); the quick run's tiles take seconds, so the report also gives the compute time per
tile above which the measured overhead is under 5 %.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import suite_common as C

QUICK = {
    "frame_size": 96,
    "n_positions": 16,
    "grid": [2, 2],
    "epochs": 3,
    "memory_sizes": [64, 128],
}
FULL = {
    "frame_size": 256,
    "n_positions": 25,
    "grid": [2, 2],
    "epochs": 10,
    "memory_sizes": [64, 128, 256, 512],
}
GPU = {
    "frame_size": 1024,
    "n_positions": 25,
    "grid": [2, 2],
    "epochs": 20,
    "memory_sizes": [256, 512, 1024],
}
ENGINE = {"engine": "rnf", "batch_size": 4}


def add_args(p) -> None:
    p.add_argument("--pipeline-epochs", type=int, help="RNF epochs per tile (override)")


def _cfg(args) -> dict:
    g = dict(
        GPU if args.device.startswith("cuda") and not args.quick else QUICK if args.quick else FULL
    )
    if getattr(args, "pipeline_epochs", None):
        g["epochs"] = int(args.pipeline_epochs)
    return g


def make_cxi(folder: Path, frame_size: int, n_positions: int) -> Path:
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    path = folder / f"coded-{frame_size}.cxi"
    if not path.exists():
        # known_surface=False: with the surface in the dataset's metadata, detector tiles
        # smaller than the frame fail (ptytasks.tiling.tile_dataset crops the frames and
        # the probe but not meta["surface"]: "surface shape (64, 64) != sensor shape
        # (48, 48)"). The cost of a tile is the same with the model's default surface.
        write_cxi(
            path,
            simulate(
                "coded", frame_size=frame_size, n_positions=n_positions, known_surface=False, seed=0
            ),
        )
    return path


def prepare_store(cxi: Path, store: Path, grid) -> list[dict]:
    from flows import stages
    from flows.params import CalibrationParams, IngestParams, SubsampleParams, TilingParams

    stages.ingest(str(cxi), str(store), IngestParams())
    stages.subsample(str(store), SubsampleParams())
    stages.calibrate(str(store), CalibrationParams())
    return stages.plan(str(store), TilingParams(grid=tuple(grid)))


def engine_params(epochs: int, device: str):
    from flows.params import EngineParams

    opts = {"batch_size": ENGINE["batch_size"], **({"device": device} if device != "cpu" else {})}
    return EngineParams(engine=ENGINE["engine"], epochs=int(epochs), options=opts)


def direct_tiles(
    store: Path, tiles: list[dict], epochs: int, threads: int, device: str
) -> list[dict]:
    """``stages.reconstruct_tile`` in this process, its engine call timed separately."""
    import torch

    import ptytasks.engines.registry as reg
    from flows import stages
    from flows.params import CalibrationParams

    calls: list[float] = []
    orig = reg.run_engine

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            calls.append(time.perf_counter() - t0)

    reg.run_engine = timed
    out = []
    try:
        for t in tiles:
            t0 = time.perf_counter()
            ref = stages.reconstruct_tile(
                str(store),
                t,
                engine_params(epochs, device),
                CalibrationParams(),
                torch_threads=threads,
            )
            out.append(
                {
                    "tile_id": t["tile_id"],
                    "stage_s": time.perf_counter() - t0,
                    "stage_reported_s": ref.get("seconds"),
                    "engine_s": calls[-1],
                    "core_px": _core_px(t),
                }
            )
    finally:
        reg.run_engine = orig
    return out


def _core_px(tile: dict) -> int:
    y0, y1, x0, x1 = tile["core"]
    return int((y1 - y0) * (x1 - x0))


def flow_run(
    store: Path, tiles: list[dict], epochs: int, workers: int, threads: int, device: str
) -> float:
    """Wall seconds of the ``reconstruct-tiles`` flow on a fresh local Dask cluster."""
    from flows.cluster import make_task_runner
    from flows.params import CalibrationParams, ClusterParams
    from flows.pipeline import reconstruct_tiles

    kind = "local_cuda" if device.startswith("cuda") else "local"
    cluster = ClusterParams(
        kind=kind, n_workers=workers, threads_per_worker=1, torch_threads=threads
    )
    runner = make_task_runner(cluster)
    t0 = time.perf_counter()
    reconstruct_tiles.with_options(task_runner=runner, retries=0)(
        str(store), tiles, engine_params(epochs, device), CalibrationParams(), [""], threads
    )
    return time.perf_counter() - t0


def memory_probe(cxi: Path, store: Path, epochs: int, threads: int, device: str) -> dict:
    """Peak RSS of a fresh process reconstructing the (single) tile of ``store``."""
    code = (
        "import json, resource, sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from bench.suite_pipeline import prepare_store, engine_params\n"
        "from flows import stages\n"
        "from flows.params import CalibrationParams\n"
        "import psutil, torch, ptytasks.engines.rnf\n"
        f"tiles = prepare_store({str(cxi)!r}, {str(store)!r}, (1, 1))\n"
        "import threading\n"
        "proc = psutil.Process()\n"
        "base = proc.memory_info().rss // 1024\n"
        "peak = [base]\n"
        "stop = threading.Event()\n"
        "def sample():\n"
        "    while not stop.wait(0.01):\n"
        "        peak[0] = max(peak[0], proc.memory_info().rss // 1024)\n"
        "th = threading.Thread(target=sample, daemon=True); th.start()\n"
        "t0 = time.perf_counter()\n"
        f"stages.reconstruct_tile({str(store)!r}, tiles[0], engine_params({epochs}, "
        f"{device!r}), CalibrationParams(), torch_threads={threads})\n"
        "dt = time.perf_counter() - t0\n"
        "stop.set(); th.join()\n"
        "peak = max(peak[0], proc.memory_info().rss // 1024)\n"
        "print(json.dumps({'base_kib': base, 'peak_kib': peak, 'seconds': dt,"
        " 'object_shape': tiles[0]['object_shape']}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=3600, env=env
    )
    if p.returncode != 0:
        return {"error": p.stderr[-1500:]}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {
        "peak_rss_mib": r["peak_kib"] / 1024,
        "before_tile_rss_mib": r["base_kib"] / 1024,
        "tile_rss_mib": (r["peak_kib"] - r["base_kib"]) / 1024,
        "seconds": r["seconds"],
        "object_shape": r["object_shape"],
    }


def run(args) -> dict:
    # A private Prefect home (its SQLite database): a shared ~/.prefect is locked by any
    # other Prefect process on the machine ("database is locked").
    prefect_home = Path(tempfile.mkdtemp(prefix="bench-prefect-home-"))
    os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.runner import quiet_prefect_console
    from flows.serve import prefect_api

    g = _cfg(args)
    head = C.run_header("pipeline", args)
    head["grid"] = g
    head["engine"] = {**ENGINE, "epochs": g["epochs"]}
    head["notes"] = (
        "coded data simulated with known_surface=False: tile_dataset does not "
        "crop meta['surface'] to the tile's detector crop (ptytasks/tiling.py), "
        "so tiles smaller than the frame fail with a known surface"
    )
    path = C.result_path("pipeline", args.device, args.quick, args.out, getattr(args, "tag", None))
    res: dict = {}
    threads = max(1, int(args.threads or 1))
    t_suite = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        tmp = Path(tmp)
        cxi = make_cxi(tmp, g["frame_size"], g["n_positions"])
        # --- compute vs stage, in process
        C.log(
            f"pipeline: direct tiles ({g['frame_size']} px frames, grid {g['grid']}, "
            f"{g['epochs']} RNF epochs)"
        )
        tiles = prepare_store(cxi, tmp / "direct.zarr", g["grid"])
        direct = direct_tiles(tmp / "direct.zarr", tiles, g["epochs"], threads, args.device)
        res["direct"] = direct
        # Median: the first tile of a process also pays one-off warm-up (allocator, plans).
        engine_s = float(np.median([d["engine_s"] for d in direct]))
        stage_s = float(np.median([d["stage_s"] for d in direct]))
        res["compute_per_tile_s"] = engine_s
        res["stage_per_tile_s"] = stage_s
        res["stage_overhead_fraction"] = (stage_s - engine_s) / engine_s
        C.write_json(path, {**head, **res, "partial": True})
        # --- orchestration: Prefect + Dask, 1 and 2 workers. Each flow run starts its own
        # cluster (lazily, at the first task) and each worker imports the stack on its first
        # tile, so the marginal cost of the last half of the tiles, T(n) - T(n/2), is what a
        # long batch pays per tile; the fixed part is reported too.
        quiet_prefect_console()
        flows: dict = {}
        half = max(1, len(tiles) // 2)
        with prefect_api() as url:
            res["prefect_api"] = "temporary" if url and "127.0.0.1" in str(url) else "given"
            for workers in (1, 2):
                runs = {}
                for n in (half, len(tiles)):
                    C.log(f"pipeline: flow, {workers} worker(s), {n} tiles")
                    st = tmp / f"flow{workers}-{n}.zarr"
                    tl = prepare_store(cxi, st, g["grid"])[:n]
                    runs[n] = flow_run(st, tl, g["epochs"], workers, threads, args.device)
                marginal = runs[len(tiles)] - runs[half]
                flows[workers] = {
                    "flow_s": {str(k): v for k, v in runs.items()},
                    "marginal_s": marginal,
                    "marginal_tiles": len(tiles) - half,
                    "fixed_s": runs[half] - marginal * half / (len(tiles) - half),
                }
                C.write_json(path, {**head, **res, "flows": flows, "partial": True})
        n_marg = len(tiles) - half
        res["flows"] = flows
        per_tile_1 = flows[1]["marginal_s"] / n_marg
        res["flow_per_tile_1w_s"] = per_tile_1
        res["overhead_per_tile_s"] = per_tile_1 - engine_s
        res["overhead_fraction"] = (per_tile_1 - engine_s) / engine_s
        res["compute_s_for_5pct"] = max(0.0, res["overhead_per_tile_s"]) / 0.05
        res["scaling_1_to_2"] = flows[1]["marginal_s"] / flows[2]["marginal_s"]
        core = float(np.sum([d["core_px"] for d in direct[half:]]))
        px_per_s_2w = core / flows[2]["marginal_s"]
        px_per_s_1w = core / flows[1]["marginal_s"]
        res["projection_1gpx"] = {
            "core_px_measured": core,
            "epochs": g["epochs"],
            "px_per_s_1_worker": px_per_s_1w,
            "px_per_s_2_workers": px_per_s_2w,
            "hours_2_workers": 1e9 / px_per_s_2w / 3600,
            "hours_1_worker": 1e9 / px_per_s_1w / 3600,
            "note": "marginal tiles of a flow (fixed flow and worker start-up excluded); "
            "same epochs and tile size as measured",
        }
        C.write_json(path, {**head, **res, "partial": True})
        # --- memory per worker vs tile size
        mem = []
        for size in g["memory_sizes"]:
            C.log(f"pipeline: memory of one {size} px tile in a fresh process")
            cx = make_cxi(tmp, size, g["n_positions"])
            m = memory_probe(cx, tmp / f"mem{size}.zarr", g["epochs"], threads, args.device)
            m["frame_size"] = size
            mem.append(m)
            C.write_json(path, {**head, **res, "memory": mem, "partial": True})
        res["memory"] = mem
    out = {
        **head,
        **res,
        "partial": False,
        "seconds": time.perf_counter() - t_suite,
        "ru_maxrss_parent_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    C.write_json(path, out)
    return out
