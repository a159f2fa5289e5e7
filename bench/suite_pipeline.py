"""Pipeline cost: what Prefect + Dask add per tile, worker scaling, memory, gigapixel time.

On simulated coded-ptychography data (the gigapixel flow's modality), with the production
engine (RNF) and one torch thread per worker:

* **fixed-compute tiles**: one detector tile of the plan, replicated under new ids, so
  every tile costs the same; its epochs are set so one tile computes for about
  ``tile_seconds`` (timed once in this process);
* **compute**: ``n_direct`` such tiles through ``flows.stages.reconstruct_tile`` in this
  process, the engine call (``run_engine``) timed inside it: mean and spread;
* **orchestration**: the ``reconstruct-tiles`` Prefect flow on a local Dask cluster with 1
  and then 2 worker processes, for several tile counts ``n`` (``counts``); a straight-line
  fit ``T(n) = fixed + n * per_tile`` gives the per-tile time with its standard error, so
  ``per-tile overhead = per_tile(1 worker) - compute per tile`` has a 95 % interval (the
  fixed part -- cluster start and stop, worker imports, API round trips -- is the
  intercept, kept out of the per-tile cost);
* **scaling** 1 -> 2 workers: ``per_tile(1) / per_tile(2)`` (2.0 is perfect);
* **memory**: peak RSS (sampled every 10 ms) of a fresh worker-like process while it
  reconstructs one tile, per tile size, and its increment over the RSS before the tile;
* **projection** to a 1-gigapixel coded field: the measured tile rate (core object pixels
  per second from the fitted per-tile time, 1 and 2 workers), scaled to 1e9 pixels, at the
  measured tile size and epochs, with the interval the slope's carries.

The overhead target (< 5 % of compute) refers to production tiles (minutes of compute
each); the report also gives the compute time per tile above which the measured overhead
is under 5 %.
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
    "tile_seconds": 1.0,
    "n_direct": 8,
    "counts": [4, 8, 12, 16],
    "memory_sizes": [64, 128],
}
FULL = {
    "frame_size": 256,
    "n_positions": 25,
    "grid": [2, 2],
    "tile_seconds": 2.0,
    "n_direct": 16,
    "counts": [8, 16, 24, 32, 48],
    "memory_sizes": [64, 128, 256, 512],
}
GPU = {
    "frame_size": 1024,
    "n_positions": 25,
    "grid": [2, 2],
    "tile_seconds": 2.0,
    "n_direct": 16,
    "counts": [8, 16, 32, 64],
    "memory_sizes": [256, 512, 1024],
}
ENGINE = {"engine": "rnf", "batch_size": 4}


def add_args(p) -> None:
    p.add_argument("--pipeline-epochs", type=int,
                   help="RNF epochs per tile (default: set from --pipeline-tile-seconds)")
    p.add_argument("--pipeline-tile-seconds", type=float,
                   help="compute per tile the epochs are chosen for (default 2, quick 1)")


def _cfg(args) -> dict:
    g = dict(
        GPU if args.device.startswith("cuda") and not args.quick else QUICK if args.quick else FULL
    )
    if getattr(args, "pipeline_epochs", None):
        g["epochs"] = int(args.pipeline_epochs)
    if getattr(args, "pipeline_tile_seconds", None):
        g["tile_seconds"] = float(args.pipeline_tile_seconds)
    return g


def replicate(tile: dict, n: int, prefix: str) -> list[dict]:
    """``n`` copies of ``tile`` under ids ``{prefix}{i:04d}``: the same compute each, each
    written as its own step (none is skipped as already complete)."""
    return [{**tile, "tile_id": f"{prefix}{i:04d}"} for i in range(n)]


def line_fit(n, t) -> dict:
    """``t = fixed + n * per_tile`` by least squares, with the slope's standard error and
    95 % interval (Student t, ``len(n) - 2`` degrees of freedom)."""
    from scipy import stats

    n, t = np.asarray(n, float), np.asarray(t, float)
    res = stats.linregress(n, t)
    dof = max(1, len(n) - 2)
    half = float(stats.t.ppf(0.975, dof) * res.stderr)
    return {"per_tile_s": float(res.slope), "per_tile_se_s": float(res.stderr),
            "per_tile_ci95_s": [float(res.slope) - half, float(res.slope) + half],
            "fixed_s": float(res.intercept), "dof": dof, "r2": float(res.rvalue**2)}


def overhead_interval(flow: dict, compute_s) -> dict:
    """Per-tile orchestration overhead = the flow's fitted per-tile time (:func:`line_fit`)
    minus the mean of the directly timed tiles ``compute_s``, with its standard error and
    95 % interval. The two estimates are independent, with ``flow["dof"]`` and
    ``len(compute_s) - 1`` degrees of freedom; the interval takes Student t at the
    Welch-Satterthwaite degrees of freedom of their difference (the flow fit's 3 alone,
    used before 2026-12-04, made the interval ~1.4x too wide)."""
    from scipy import stats

    c = np.asarray(compute_s, float)
    se_f, se_c = float(flow["per_tile_se_s"]), float(c.std(ddof=1) / np.sqrt(c.size))
    se = float(np.hypot(se_f, se_c))
    dof = se**4 / (se_f**4 / flow["dof"] + se_c**4 / max(1, c.size - 1))
    over = float(flow["per_tile_s"] - c.mean())
    half = float(stats.t.ppf(0.975, dof) * se)
    return {"overhead_per_tile_s": over, "overhead_per_tile_se_s": se,
            "overhead_per_tile_dof": float(dof), "overhead_per_tile_ci95_s": [over - half,
                                                                              over + half]}


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
        C.log(f"pipeline: direct tiles ({g['frame_size']} px frames, one tile of a "
              f"{g['grid']} plan, ~{g['tile_seconds']} s each)")  # fmt: skip
        tile0 = prepare_store(cxi, tmp / "direct.zarr", g["grid"])[0]
        if not g.get("epochs"):
            # a warm-up tile (the first of a process pays allocator and plan set-up), then
            # one at 2 epochs and one at 6: the per-epoch cost, and the epochs that make a
            # tile compute for about tile_seconds
            def once(epochs, tag):
                return direct_tiles(tmp / "direct.zarr", replicate(tile0, 1, tag), epochs,
                                    threads, args.device)[0]["engine_s"]  # fmt: skip

            once(1, "warm-")
            two, six = once(2, "e2-"), once(6, "e6-")
            per_epoch = max((six - two) / 4, 1e-3)
            g["epochs"] = int(min(1000, max(1, round(g["tile_seconds"] / per_epoch))))
            res["epoch_calibration"] = {"per_epoch_s": per_epoch, "two_epochs_s": two,
                                        "six_epochs_s": six}  # fmt: skip
        head["engine"] = {**ENGINE, "epochs": g["epochs"]}
        direct = direct_tiles(tmp / "direct.zarr", replicate(tile0, g["n_direct"], "d"),
                              g["epochs"], threads, args.device)  # fmt: skip
        res["direct"] = direct
        # the first tile of a process also pays one-off warm-up (allocator, plans)
        eng = np.array([d["engine_s"] for d in direct[1:] or direct])
        stage = np.array([d["stage_s"] for d in direct[1:] or direct])
        engine_s = float(eng.mean())
        res["compute_per_tile_s"] = engine_s
        res["compute_per_tile_sd_s"] = float(eng.std(ddof=1)) if len(eng) > 1 else 0.0
        res["stage_per_tile_s"] = float(stage.mean())
        res["stage_overhead_fraction"] = (res["stage_per_tile_s"] - engine_s) / engine_s
        C.write_json(path, {**head, **res, "partial": True})
        # --- orchestration: Prefect + Dask, 1 and 2 workers, several tile counts; each
        # flow run starts its own cluster, so the fit's intercept holds the fixed cost
        quiet_prefect_console()
        flows: dict = {}
        with prefect_api() as url:
            res["prefect_api"] = "temporary" if url and "127.0.0.1" in str(url) else "given"
            for workers in (1, 2):
                st = tmp / f"flow{workers}.zarr"
                prepare_store(cxi, st, g["grid"])
                runs = {}
                for n in g["counts"]:
                    C.log(f"pipeline: flow, {workers} worker(s), {n} tiles of {g['epochs']} "
                          "epochs")  # fmt: skip
                    tl = replicate(tile0, n, f"w{workers}n{n}-")
                    runs[n] = flow_run(st, tl, g["epochs"], workers, threads, args.device)
                    flows[workers] = {"flow_s": {str(k): v for k, v in runs.items()}}
                    C.write_json(path, {**head, **res, "flows": flows, "partial": True})
                flows[workers].update(line_fit(list(runs), list(runs.values())))
        res["flows"] = flows
        f1, f2 = flows[1], flows[2]
        res["flow_per_tile_1w_s"] = f1["per_tile_s"]
        res.update(overhead_interval(f1, eng))
        over = res["overhead_per_tile_s"]
        res["overhead_fraction"] = over / engine_s
        res["compute_s_for_5pct"] = max(0.0, over) / 0.05
        res["scaling_1_to_2"] = f1["per_tile_s"] / f2["per_tile_s"]
        core = _core_px(tile0)

        def hours(per_tile_s):
            return 1e9 / (core / per_tile_s) / 3600

        res["projection_1gpx"] = {
            "core_px_per_tile": core,
            "epochs": g["epochs"],
            "px_per_s_1_worker": core / f1["per_tile_s"],
            "px_per_s_2_workers": core / f2["per_tile_s"],
            "hours_1_worker": hours(f1["per_tile_s"]),
            "hours_1_worker_ci95": [hours(x) for x in f1["per_tile_ci95_s"]],
            "hours_2_workers": hours(f2["per_tile_s"]),
            "hours_2_workers_ci95": [hours(x) for x in f2["per_tile_ci95_s"]],
            "note": "fitted per-tile time of fixed-compute tiles (flow and worker start-up in "
            "the intercept, excluded); at the measured tile size and epochs",
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
