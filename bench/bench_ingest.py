"""Ingest benchmark: a 4D-STEM stack from HDF5 into the Zarr run store.

Measures, for a ``scan x scan`` raster of ``frame x frame`` patterns (default 128x128 of
128x128, uint16 on disk, float32 in the store):

* ingest throughput (frames/s, MB/s of float32 frames) and wall time, in a child process
  whose peak RSS (``VmHWM``, :func:`bench.bench_memory.peak_rss`) is the ingest's peak memory;
* random single-frame read latency from the store (median, p95, in ms), and from the source
  HDF5 for reference;
* store size on disk and compression ratio.

Writes ``bench/results/ingest-<host>.json`` with machine info (``bench._machine``)::

    python -m bench.bench_ingest [--scan 128] [--frame 128] [--workdir /tmp/x] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
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


def make_stem_h5(path: Path, scan: tuple[int, int], frame: int, dtype="uint16") -> int:
    """A synthetic 4D-STEM file: a bright disk plus Poisson noise, written row by row."""
    import h5py

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:frame, :frame] - frame / 2
    disk = np.where(yy**2 + xx**2 < (frame / 6) ** 2, 200.0, 2.0)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("data", shape=(*scan, frame, frame), dtype=dtype,
                              chunks=(1, scan[1], frame, frame))  # fmt: skip
        ds.attrs.update({"energy_ev": 300e3, "angle_per_pixel": 0.5e-3, "step": 0.4e-10})
        base = rng.poisson(disk, size=(scan[1], frame, frame))
        for r in range(scan[0]):
            # cheap variety: roll a pre-drawn noisy row instead of drawing 1e9 samples
            ds[r] = np.roll(base, r, axis=0).astype(dtype)
    return path.stat().st_size


def _child(src: str, store: str) -> None:
    """Ingest in a fresh process; print wall time and peak RSS as JSON."""
    from storage.store import RunStore

    t0 = time.perf_counter()
    RunStore.create(store, overwrite=True).ingest(src)
    wall = time.perf_counter() - t0
    from bench.bench_memory import peak_rss  # VmHWM: ru_maxrss carries the parent's peak

    print(json.dumps({"wall_s": wall, "peak_rss_bytes": peak_rss()}))


def ingest_in_child(src: Path, store: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-m", "bench.bench_ingest", "--child", str(src),
                          str(store)], check=True, capture_output=True, text=True, cwd=REPO,
                         env=env)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _latency(read, n: int, samples: int, rng) -> dict:
    idx = rng.integers(0, n, samples)
    times = []
    for i in idx:
        t0 = time.perf_counter()
        read(int(i))
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {"samples": samples, "median_ms": float(np.median(ms)),
            "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max())}  # fmt: skip


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def run(scan: int, frame: int, workdir: Path, out: Path | None) -> dict:
    import h5py
    import zarr

    from bench._machine import host_tag, machine_info

    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()  # the machine may be shared: record how busy it was
    src, store = workdir / "stem.h5", workdir / "run.zarr"
    t0 = time.perf_counter()
    src_bytes = make_stem_h5(src, (scan, scan), frame)
    make_s = time.perf_counter() - t0
    n = scan * scan
    ing = ingest_in_child(src, store)
    mb = n * frame * frame * 4 / 1e6
    frames = zarr.open_array(str(store / "raw" / "frames"), mode="r")
    rng = np.random.default_rng(1)
    lat_store = _latency(lambda i: frames[i], n, 300, rng)
    with h5py.File(src, "r") as f:
        ds = f["data"]
        lat_h5 = _latency(lambda i: ds[i // scan, i % scan], n, 300, rng)
    store_bytes = dir_size(store)
    result = {
        "benchmark": "ingest_4dstem_hdf5_to_zarr",
        "dataset": {"scan": [scan, scan], "frame": [frame, frame], "frames": n,
                    "source_dtype": "uint16", "store_dtype": "float32",
                    "source_bytes": src_bytes, "float32_bytes": n * frame * frame * 4},
        "ingest": {"wall_s": ing["wall_s"], "frames_per_s": n / ing["wall_s"],
                   "mb_per_s_float32": mb / ing["wall_s"],
                   "peak_rss_mb": ing["peak_rss_bytes"] / 2**20},
        "store": {"bytes": store_bytes, "compression_ratio": n * frame * frame * 4 / store_bytes,
                  "chunks": list(frames.chunks), "shards": list(frames.shards or ())},
        "random_frame_read": {"store": lat_store, "source_hdf5": lat_h5},
        "make_source_s": make_s,
        "load_average_1_5_15": {"before": list(load_before), "after": list(os.getloadavg())},
        "codec": __import__("storage.layout", fromlist=["FRAME_CODEC"]).FRAME_CODEC,
        "machine": machine_info(),
    }  # fmt: skip
    out = out or REPO / "bench" / "results" / f"ingest-{host_tag()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=int, default=128)
    ap.add_argument("--frame", type=int, default=128)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--child", nargs=2, metavar=("SRC", "STORE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _child(*a.child)
        return
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        res = run(a.scan, a.frame, work, a.out)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: res[k] for k in ("dataset", "ingest", "store", "random_frame_read")},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
