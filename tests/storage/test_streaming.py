"""Streaming ingest: a 4 GB HDF5 4D-STEM stack with peak memory under 1 GB (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The child's own peak RSS is VmHWM (bench.bench_memory.peak_rss), the high-water mark of
# its address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not: Linux carries it across
# ``exec`` from the (v)forked copy of the parent, so a child of a pytest process that had
# grown to ~4 GB after an hour of slow tests reported 4.8 GB for an ingest of ~0.2 GB.
_CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from bench.bench_memory import peak_rss
from storage.store import RunStore
t0 = time.perf_counter()
store = RunStore.create({store!r})
store.ingest({src!r}, step=1e-10, energy_ev=300e3, angle_per_pixel=1e-3)
d = store.read_raw(lazy=True)
probe = [float(d.frames[i].sum()) for i in (0, 12345, d.n_frames - 1)]
print(json.dumps({{"wall_s": time.perf_counter() - t0, "n": d.n_frames, "probe": probe,
    "peak_rss": peak_rss()}}))
"""


def _write_stack(path, scan=(256, 256), frame=128):
    """float32 (256, 256, 128, 128): 4.3 GB, written one scan row (16 MiB) at a time."""
    rng = np.random.default_rng(0)
    base = rng.poisson(3.0, size=(scan[1], frame, frame)).astype(np.float32)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("data", shape=(*scan, frame, frame), dtype="float32",
                              chunks=(1, 16, frame, frame))  # fmt: skip
        for r in range(scan[0]):
            ds[r] = base + r  # row r: every pixel offset by r (checked after ingest)
    return base


@pytest.mark.slow
def test_ingest_4gb_stem_under_1gb_rss(tmp_path):
    src = tmp_path / "big.h5"
    base = _write_stack(src)
    assert src.stat().st_size > 4e9
    code = textwrap.dedent(_CHILD).format(repo=REPO, store=str(tmp_path / "r.zarr"),
                                          src=str(src))  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=1800)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"ingest of 4.3 GB: {res['wall_s']:.1f} s, peak RSS {res['peak_rss'] / 2**20:.0f} MiB")
    assert res["n"] == 256 * 256
    assert res["peak_rss"] < 1 * 2**30
    for i, got in zip((0, 12345, 65535), res["probe"], strict=True):
        r, c = divmod(i, 256)
        assert got == pytest.approx(float((base[c] + r).sum()), rel=1e-6)
