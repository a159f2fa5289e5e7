"""Why scan-position correction stalls on the positions benchmark (issue #19): ``python -m
bench.positions_capture``.

The benchmark's case (:mod:`bench.bench_positions`: 50 kept Fermat positions, 5 px RMS random
errors plus a 2 % scale error, 1e6 photons per frame, the true probe as the start) on
*tuning* seeds only (10, 11; the benchmark scores 0-2). Three measurements:

* ``true_object_search``: every frame's whole-pixel grid search (radius 12 px, around its
  nominal corner) against the *true* object and probe. Whether the frames determine their
  positions at all.
* ``nominal_object_search``: the same search against rPIE's object and probe reconstructed
  at the nominal positions (100 epochs): how many frames leave their nominal corner, and how
  many land within 1.5 px of the truth.
* ``capture``: rPIE and RNF, each with its defaults and ``learn_positions``, 100 epochs,
  started from the *true* corners plus Gaussian errors of ``sigma`` px RMS (no scale
  error): the affine-fitted RMS error at the end against the start's. The range of errors
  the refinement can remove.

Writes ``bench/results/records/positions-capture-<commit>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench._machine import machine_info
from bench.bench_positions import affine_rms, case, raw_rms

RESULTS = Path(__file__).resolve().parent / "results" / "records"


def search(d, obj, probe, radius: int) -> np.ndarray:
    """Best whole-pixel corner of every frame within ``radius`` of its nominal one."""
    import torch

    from ptytasks.engines.position_correction import grid_search
    from ptytasks.modalities import model_for

    model = model_for(d)
    w = d.frame_shape
    amp = torch.sqrt(torch.as_tensor(np.clip(d.frames, 0, None), dtype=torch.float32))
    sf = model.intensity_factors.detach().float().sqrt()
    pos = torch.as_tensor(np.asarray(d.positions_px, float)).clone()
    upper = torch.tensor([d.object_shape[0] - w[0], d.object_shape[1] - w[1]], dtype=pos.dtype)
    probe = torch.as_tensor(np.asarray(probe)).to(torch.complex64)
    grid_search(torch.as_tensor(np.asarray(obj)).to(torch.complex64),
                probe[None] if probe.dim() == 2 else probe, pos, model, amp, sf,
                radius=radius, lower=torch.zeros(2, dtype=pos.dtype), upper=upper)  # fmt: skip
    return pos.numpy()


def frame_errors(found, true) -> np.ndarray:
    return np.hypot(*(np.asarray(found) - true).T)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="10,11")
    p.add_argument("--sigmas", default="1,2,3,5")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    import torch

    from ptytasks.engines.registry import run_engine

    torch.set_num_threads(1)
    info = machine_info()
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        d, true = case(seed)
        nominal = np.asarray(d.positions_px, float)
        gt = d.ground_truth
        e_nom = frame_errors(nominal, true)
        found = search(d, gt["object"], gt["probe"], 12)
        e = frame_errors(found, true)
        rows.append({"seed": seed, "what": "true_object_search", "radius_px": 12,
                     "nominal_raw_rms_px": raw_rms(nominal, true),
                     "raw_rms_px": raw_rms(found, true), "max_frame_error_px": float(e.max()),
                     "frames_within_1px": int((e < 1).sum()), "frames": len(e)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        r = run_engine("rpie", d, {"epochs": a.epochs}, probe_prior=gt["probe"])
        found = search(d, r.object, r.probe, 10)
        e = frame_errors(found, true)
        moved = np.hypot(*(found - nominal).T) > 0
        rows.append({"seed": seed, "what": "nominal_object_search", "radius_px": 10,
                     "frames_moved": int(moved.sum()), "frames_within_1p5px": int((e < 1.5).sum()),
                     "frames_nearer_truth": int((e < e_nom).sum()), "frames": len(e),
                     "raw_rms_px": raw_rms(found, true)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        rng = np.random.default_rng(seed + 99)
        for sigma in (float(s) for s in a.sigmas.split(",")):
            start = true + rng.normal(size=true.shape) * sigma / np.sqrt(2)
            start = np.clip(start, 0, np.subtract(d.object_shape, d.frame_shape))
            d.positions_px = start
            for eng in ("rpie", "rnf"):
                t0 = time.perf_counter()
                r = run_engine(eng, d, {"epochs": a.epochs, "learn_positions": True},
                               probe_prior=gt["probe"])  # fmt: skip
                rows.append({"seed": seed, "what": "capture", "engine": eng, "sigma_px": sigma,
                             "start_affine_rms_px": affine_rms(start, true),
                             "end_affine_rms_px": affine_rms(np.asarray(r.positions_px), true),
                             "seconds": time.perf_counter() - t0})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
            d.positions_px = nominal
    out = {"suite": "positions_capture", "machine": info, "epochs": a.epochs, "rows": rows,
           "load_average_end": list(os.getloadavg())}  # fmt: skip
    commit = (info.get("git") or {}).get("commit") or "unknown"
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"positions-capture-{str(commit)[:7]}.json"
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(path)
    return out


if __name__ == "__main__":
    main()
