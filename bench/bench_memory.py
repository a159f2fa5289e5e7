"""Memory benchmark: peak RSS of ingest, calibration, evaluation and export at 1x/4x/16x data.

Each stage runs in a fresh child process (its ``VmHWM``, the peak resident set of that
process, imports included, is the stage's peak memory) on synthetic data whose size grows
with the scale ``s``:

* **ingest** -- a CXI file of ``256 s`` frames of 128x128 float32 (16 MiB x s) with a
  ground-truth object, streamed into a new run store (``RunStore.ingest``);
* **calibrate** -- the ``calibrate`` stage (``probe: mean_pattern``) on that store: the
  mean frame is streamed block by block;
* **evaluate** -- the ``evaluate`` stage (truth metrics and previews) on a mosaic of
  ``512 sqrt(s)`` pixels square with a ground truth of the same size;
* **export** -- ``export_npz`` of that mosaic.

The evaluation and export bounds are lowered in the children so that the small cases here
already exceed them (``--max-eval-pixels``, default 512 x 512, for
``ptytasks.evaluation.MAX_EVAL_PIXELS``; ``--export-block``, default 2 MiB, for
``flows.export._EXPORT_BLOCK_BYTES``); the pipeline's own bounds are 2048 x 2048 pixels and
64 MiB. A bounded stage shows the same peak at 4x and 16x. Writes
``bench/results/memory-cpu.json`` (git commit and dirty flag, settings, machine, load
average)::

    python -m bench.bench_memory [--scales 1 4 16] [--workdir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FRAME = 128  # detector pixels per side
FRAMES_1X = 256  # frames at scale 1 (16 MiB of float32)
MOSAIC_1X = 512  # mosaic side at scale 1
STEP = 16  # scan step, object pixels


# ----------------------------------------------------------------------------- data
def make_cxi(path: Path, scale: int) -> dict:
    """A far-field CXI file of ``FRAMES_1X * scale`` noisy frames on a square raster."""
    from ptytasks.data import PtychoData
    from ptytasks.lazy_frames import LazyFrames
    from storage.cxi import write_cxi

    side = int(round(math.sqrt(FRAMES_1X * scale)))
    n = side * side
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:FRAME, :FRAME] - FRAME / 2
    disk = np.where(yy**2 + xx**2 < (FRAME / 8) ** 2, 500.0, 1.0).astype(np.float32)
    base = rng.poisson(disk, size=(64, FRAME, FRAME)).astype(np.float32)
    # frames made a block at a time (rolled copies of a pre-drawn noisy stack): the
    # benchmark's own parent process stays small too
    get = lambda a, b: np.stack([np.roll(base[i % 64], i // 64, axis=1) for i in range(a, b)])
    iy, ix = np.divmod(np.arange(n), side)
    pos = np.stack([iy, ix], 1).astype(np.float64) * STEP + 8
    shape = (int(pos[:, 0].max()) + FRAME + 8, int(pos[:, 1].max()) + FRAME + 8)
    truth = np.exp(0.3j * rng.random(shape)).astype(np.complex64)
    d = PtychoData("farfield", frames=LazyFrames(get, (n, FRAME, FRAME)), wavelength=1e-10,
                   pixel_size=1e-8, object_shape=shape, positions_px=pos, distance=1.0,
                   detector_pixel=75e-6, ground_truth={"object": truth},
                   meta={"source": "bench_memory"})  # fmt: skip
    write_cxi(path, d)
    return {"frames": n, "frame": [FRAME, FRAME], "frames_bytes_float32": n * FRAME * FRAME * 4,
            "object_shape": list(shape), "file_bytes": path.stat().st_size}  # fmt: skip


def make_mosaic_store(path: Path, scale: int) -> dict:
    """A run store with a tiny raw step, a ground truth and a ``512 sqrt(s)`` mosaic."""
    from ptytasks.data import PtychoData
    from storage import layout as L
    from storage.atomic import fingerprint
    from storage.mosaic import MosaicWriter
    from storage.store import RunStore

    side = int(MOSAIC_1X * math.sqrt(scale))
    rng = np.random.default_rng(1)
    truth = np.exp(0.5j * rng.random((side, side))).astype(np.complex64)
    frames = rng.poisson(5.0, (4, 16, 16)).astype(np.float32)
    d = PtychoData("farfield", frames=frames, wavelength=1e-10, pixel_size=1e-8,
                   object_shape=(side, side), positions_px=np.zeros((4, 2)),
                   ground_truth={"object": truth})  # fmt: skip
    store = RunStore.create(path, overwrite=True)
    store.write_raw(d)
    store.write_subsample(np.arange(4))
    with store.step(L.MOSAIC, fingerprint("bench", side), depends_on=[L.SUBSAMPLE]) as st:
        w = MosaicWriter.create(store, (side, side), pixel_size=1e-8)
        for ys, xs in w.shards():
            h, wd = ys.stop - ys.start, xs.stop - xs.start
            noise = 0.05 * (rng.standard_normal((h, wd)) + 1j * rng.standard_normal((h, wd)))
            w.write_region(ys.start, xs.start, truth[ys, xs] * np.exp(0.2j) + noise,
                           rng.uniform(0.5, 1.0, (h, wd)))  # fmt: skip
        w.build_pyramid()
        assert not st.done
    return {"mosaic": [side, side], "mosaic_bytes_complex64": side * side * 8}


# ----------------------------------------------------------------------------- children
def _child(stage: str, src: str, store: str, work: str, max_eval: int, block: int,
           traced: bool) -> None:  # fmt: skip
    """Run one stage in this (fresh) process; print wall time and peak RSS as JSON, or with
    ``traced`` the peak of Python/NumPy allocations (``tracemalloc``: what the code holds,
    without the allocator's and libraries' own retention; tracing itself costs memory, so
    it runs separately)."""
    import tracemalloc

    for done in ("priors", "metrics"):  # measured twice: never skip as already complete
        shutil.rmtree(Path(store) / done, ignore_errors=True)
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    if stage == "ingest":
        from storage.store import RunStore

        RunStore.create(store, overwrite=True).ingest(src)
    elif stage == "calibrate":
        from flows import stages
        from flows.params import CalibrationParams, SubsampleParams

        stages.subsample(store, SubsampleParams())
        stages.calibrate(store, CalibrationParams(probe="mean_pattern"))
    elif stage == "evaluate":
        import ptytasks.evaluation as ev
        from flows import stages
        from flows.params import EvaluationParams

        ev.MAX_EVAL_PIXELS = max_eval
        out = stages.evaluate(store, EvaluationParams(), preview_dir=work)
        print(json.dumps({"evaluation_level": out["evaluation_level"]}))
    elif stage == "export":
        from flows import export

        export._EXPORT_BLOCK_BYTES = block
        export.export_npz(store, Path(work) / "export.npz")
    else:
        raise SystemExit(f"unknown stage {stage}")
    wall = time.perf_counter() - t0
    if traced:
        print(json.dumps({"traced_peak_bytes": tracemalloc.get_traced_memory()[1]}))
    else:
        print(json.dumps({"wall_s": wall, "peak_rss_bytes": peak_rss()}))


def peak_rss() -> int:
    """Peak resident set of this process in bytes: ``VmHWM`` of ``/proc/self/status``.

    Not ``ru_maxrss``: Linux carries it across ``fork``/``exec``, so a child would report
    its parent's peak (the data generator's) whenever that was larger.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_child(stage: str, src: Path | None, store: Path, work: Path, a) -> dict:
    """The stage's wall time and peak RSS, then (a second fresh process) its traced peak."""
    res = _run_child(stage, src, store, work, a, traced=False)
    res.update(_run_child(stage, src, store, work, a, traced=True))
    res["peak_rss_mb"] = round(res.pop("peak_rss_bytes") / 2**20, 1)
    res["traced_peak_mb"] = round(res.pop("traced_peak_bytes") / 2**20, 1)
    res["wall_s"] = round(res["wall_s"], 2)
    return res


def _run_child(stage, src, store, work, a, traced: bool) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "bench.bench_memory", "--child", stage, str(src or ""),
           str(store), str(work), "--max-eval-pixels", str(a.max_eval_pixels),
           "--export-block", str(a.export_block), *(["--traced"] if traced else [])]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO, env=env)
    res: dict = {}
    for line in out.stdout.strip().splitlines():
        if line.startswith("{"):
            res.update(json.loads(line))
    return res


def run(scales: list[int], work: Path, out: Path | None, a) -> dict:
    from bench._machine import git_state, machine_info

    load0 = os.getloadavg()  # a shared machine: record how busy it was
    results: dict = {"ingest": {}, "calibrate": {}, "evaluate": {}, "export": {}}
    data: dict = {"scan": {}, "mosaic": {}}
    for s in scales:
        d = work / f"x{s}"
        d.mkdir(parents=True, exist_ok=True)
        src, store, mstore = d / "scan.cxi", d / "run.zarr", d / "mosaic.zarr"
        data["scan"][s] = make_cxi(src, s)
        results["ingest"][s] = run_child("ingest", src, store, d, a)
        results["calibrate"][s] = run_child("calibrate", None, store, d, a)
        src.unlink()
        shutil.rmtree(store)
        data["mosaic"][s] = make_mosaic_store(mstore, s)
        results["evaluate"][s] = run_child("evaluate", None, mstore, d, a)
        results["export"][s] = run_child("export", None, mstore, d, a)
        shutil.rmtree(d)
        print(f"x{s}: " + ", ".join(f"{k} {v[s]['peak_rss_mb']} MB RSS "
                                    f"({v[s]['traced_peak_mb']} MB traced)"
                                    for k, v in results.items()), flush=True)  # fmt: skip
    lo, hi = min(scales), max(scales)
    result = {
        "benchmark": "peak_memory_per_stage",
        "git": git_state(),
        "settings": {"scales": scales, "frame": FRAME, "frames_1x": FRAMES_1X,
                     "mosaic_1x": MOSAIC_1X, "max_eval_pixels": a.max_eval_pixels,
                     "export_block_bytes": a.export_block, "calibration_probe": "mean_pattern",
                     "omp_num_threads": 1},
        "data": data,
        "peak_rss_mb": {k: {s: v[s]["peak_rss_mb"] for s in scales} for k, v in results.items()},
        "traced_peak_mb": {k: {s: v[s]["traced_peak_mb"] for s in scales}
                           for k, v in results.items()},
        "growth_mb": {k: round(v[hi]["peak_rss_mb"] - v[lo]["peak_rss_mb"], 1)
                      for k, v in results.items()},
        "runs": results,
        "load_average_1_5_15": {"before": list(load0), "after": list(os.getloadavg())},
        "machine": machine_info(),
    }  # fmt: skip
    out = out or REPO / "bench" / "results" / "memory-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--max-eval-pixels", type=int, default=512 * 512)
    ap.add_argument("--export-block", type=int, default=2 * 2**20)
    ap.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=4, metavar=("STAGE", "SRC", "STORE", "WORK"),
                    help=argparse.SUPPRESS)  # fmt: skip
    a = ap.parse_args(argv)
    if a.child:
        _child(*a.child, a.max_eval_pixels, a.export_block, a.traced)
        return
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    try:
        res = run(a.scales, work, a.out, a)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: res[k] for k in ("peak_rss_mb", "traced_peak_mb", "growth_mb")},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
