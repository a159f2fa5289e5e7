"""Fourier ptychography at the camera field's edge: with and without the guard band.

The simulator images its object as periodic, as every engine does, so its own data cannot
show what a camera crop does at the field's edge. Here the specimen extends beyond the
field: FPM is simulated on an image ``big`` camera pixels wide and the images are cropped
to the central ``crop``, so light from outside the field enters the crop's edge. Each
engine runs with and without the guard mask (``ptytasks.tiling.guard_mask``, the width the
Fourier tiles use: half the 8-pixel margin) and is scored against the truth over the
field minus a border of ``trim`` object pixels. Tuning data only (the simulator's
``camera`` object, noise-free: the data are the same for every seed, which varies the
engine's start; rPIE starts the same way each time). Nothing is chosen here: the
guard's width is the coded tiles' rule.

    python -m bench.fourier_guard --out bench/results/records/fourier-guard-<commit>.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def edge_data(seed: int, big: int = 96, crop: int = 64, upsample: int = 4):
    from ptytasks.modalities import get

    d = get("fourier").simulate(image_size=big, upsample=upsample, seed=seed,
                                object_kind="camera")  # fmt: skip
    lo = (big - crop) // 2
    d.frames = np.ascontiguousarray(np.asarray(d.frames)[:, lo:lo + crop, lo:lo + crop])
    d.object_shape = (crop * upsample, crop * upsample)
    gt = dict(d.ground_truth)
    s = slice(lo * upsample, (lo + crop) * upsample)
    gt["object"] = gt["object"][s, s]
    d.ground_truth = gt
    return d


def main(argv=None) -> dict:
    import torch

    from bench._machine import git_state, machine_info
    from ptytasks.engines.registry import run_engine
    from ptytasks.metrics.errors import complex_error
    from ptytasks.tiling import guard_mask

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="101,102,103")
    ap.add_argument("--engines", default="rnf:30,rpie:20", help="engine:epochs, ...")
    ap.add_argument("--guard", type=int, default=4)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    trims = (0, 16, 32, 64)
    rows = []
    load0 = os.getloadavg()
    for seed in (int(s) for s in a.seeds.split(",")):
        d = edge_data(seed)
        truth, n = d.ground_truth["object"], d.object_shape[0]
        for spec in a.engines.split(","):
            engine, epochs = spec.split(":")
            for g in (0, a.guard):
                d.meta = {k: v for k, v in d.meta.items() if k != "tile_mask"}
                if g:
                    d.meta["tile_mask"] = guard_mask(d.frame_shape, g)
                t0 = time.perf_counter()
                r = run_engine(engine, d, {"epochs": int(epochs), "seed": seed})
                row = {"seed": seed, "engine": engine, "epochs": int(epochs), "guard": g,
                       "seconds": round(time.perf_counter() - t0, 1)}
                for t in trims:
                    m = np.zeros((n, n), bool)
                    m[t:n - t, t:n - t] = True
                    row[f"error_trim{t}"] = round(complex_error(np.asarray(r.object), truth, m), 4)
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"what": __doc__.split("\n\n")[0], "settings": vars(a), "trims_object_px": trims,
           "data": {"big": 96, "crop": 64, "upsample": 4, "object_kind": "camera", "dose": None},
           "git": git_state(), "machine": machine_info(),
           "load": {"start": load0, "end": os.getloadavg()}, "rows": rows}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return out


if __name__ == "__main__":
    main()
