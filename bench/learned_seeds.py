"""PPN vs PtychoNN over training seeds (issue #9: is the gap the architecture or the draw?).

The committed weights of a preset (``--preset``; ``docs/learned.md`` has their commands) are
seed 0. This trains both networks again with the other seeds (weights and data stream
both follow the seed; everything else is the committed command) and scores them all on
the held-out set of ``bench_learned.py``'s ``compare`` part: 256 patches (illuminated
pixels) and one stitched 60 %-overlap scan. Training takes ~8 min (``default``) or ~30 min
(``layout``) per network on one thread; ``--jobs 2`` runs two at once. Weights go to
``--dir`` (not the repository) and are reused when their JSON record shows the same
configuration.

Usage::

    python bench/learned_seeds.py [--preset layout] [--seeds 0,1,2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
MODELS = ("ppn", "ptychonn")
#: The committed training commands' settings (``TrainConfig`` fields and CLI flags).
RECIPES = {
    "default": ({}, ""),
    "layout": ({"steps": 15000, "epoch_steps": 250, "n_val": 256, "kinds": ("layout",),
                "single_material": True, "probe_diameter_px": 28.8},
               " --steps 15000 --epoch-steps 250 --n-val 256 --objects layout "
               "--single-material --probe-diameter 28.8"),
}  # fmt: skip


def _same_config(path: Path, cfg) -> bool:
    rec = path.with_suffix(".json")
    if not (path.is_file() and rec.is_file()):
        return False
    got = json.loads(rec.read_text())["config"]
    want = json.loads(json.dumps(asdict(cfg)))
    return all(got.get(k, v) == v for k, v in want.items())  # keys added later: defaults


def train_or_reuse(cfg, out: Path, command: str, log=lambda s: None) -> dict:
    """Train ``cfg`` into ``out`` (one torch thread) unless ``out`` already holds it."""
    import torch

    from ptytasks.learned.train_inversion import run

    if not _same_config(out, cfg):
        torch.set_num_threads(1)
        run(cfg, out, command=command, log=log)
    return json.loads(out.with_suffix(".json").read_text())


def train_one(item: tuple[str, int, str, str]) -> str:
    from ptytasks.learned.train_inversion import TrainConfig

    model, seed, preset, folder = item
    settings, flags = RECIPES[preset]
    out = Path(folder) / f"{model}_{preset}_s{seed}.pt"
    train_or_reuse(TrainConfig(model=model, seed=seed, **settings), out,
                   f"ptyflow train-learned --model {model} --out {out} --seed {seed}{flags}")
    return str(out)


def main(argv=None) -> dict:
    import numpy as np
    import torch

    from bench.bench_learned import KEYS, REGIMES, dataset, field_metrics, learned
    from ptytasks.learned.inversion import PRESETS, default_weights, load_inversion
    from ptytasks.learned.single_shot_data import held_out_batch
    from ptytasks.learned.train_inversion import patch_scores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default", choices=PRESETS)
    ap.add_argument("--seeds", default="0,1,2", help="comma list; 0 is the committed weights")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ptyflow-learned-seeds"))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    seeds = sorted({int(s) for s in args.seeds.split(",")} | {0})
    args.dir.mkdir(parents=True, exist_ok=True)
    todo = [(m, s, args.preset, str(args.dir)) for s in seeds if s for m in MODELS]
    with ProcessPoolExecutor(args.jobs) as pool:
        paths = dict(zip([(m, s) for m, s, *_ in todo], pool.map(train_one, todo), strict=True))
    for m in MODELS:
        paths[(m, 0)] = str(default_weights(m, args.preset))
    torch.set_num_threads(1)
    ref = load_inversion(args.preset).config
    x, a, p = held_out_batch(256, ref.geometry, ref.noise, seed=7_000_001,
                             kinds=(REGIMES[args.preset]["object_kind"],))  # fmt: skip
    data = dataset(0.6, 100, seed=101, preset=args.preset)
    rows = {}
    for (m, s), path in sorted(paths.items()):
        sc = patch_scores(load_inversion(path), x, a, p, ref.noise)
        rows[f"{m} seed {s}"] = {
            "model": m, "seed": s,
            "patches": {k: float(v.mean()) for k, v in sc.items()},
            "field": field_metrics(learned(data, weights=path).object, data)}  # fmt: skip
    summary = {}
    for part in ("patches", "field"):
        for k in KEYS:
            d = [rows[f"ppn seed {s}"][part][k] - rows[f"ptychonn seed {s}"][part][k]
                 for s in seeds]  # fmt: skip
            summary[f"{part}/{k}"] = {"mean_difference": float(np.mean(d)),
                                      "ppn_ahead_seeds": int(np.sum(np.asarray(d) > 0)),
                                      "per_seed": d}  # fmt: skip
    host = os.environ.get("BENCH_HOST", "vm")
    res = {"machine": {"host": host, "python": platform.python_version(),
                       "torch": torch.__version__, "load": [round(v, 2) for v in os.getloadavg()]},
           "preset": args.preset, "seeds": seeds, "rows": rows,
           "ppn_minus_ptychonn": summary}  # fmt: skip
    stem = "learned-seeds" if args.preset == "default" else f"learned-seeds-{args.preset}"
    out = REPO / "bench" / "results" / f"{stem}-{host}.json"
    out.write_text(json.dumps(res, indent=1))
    head = "| | amp PSNR (dB) | amp SSIM | phase PSNR (dB) | phase SSIM |\n|---|---|---|---|---|"
    lines = [f"# PPN vs PtychoNN over training seeds, preset `{args.preset}` ({host})", "",
             "The committed command per seed (seed 0 = the committed weights). Held-out "
             "patches (256, illuminated pixels, normalised ranges) | stitched 60 % scan.", "",
             "## Held-out patches", "", head]  # fmt: skip
    lines += [f"| {n} | " + " | ".join(f"{r['patches'][k]:.3f}" for k in KEYS) + " |"
              for n, r in rows.items()]  # fmt: skip
    lines += ["", "## Stitched scan", "", head]
    lines += [f"| {n} | " + " | ".join(f"{r['field'][k]:.3f}" for k in KEYS) + " |"
              for n, r in rows.items()]  # fmt: skip
    lines += ["", "## PPN - PtychoNN (mean over seeds; seeds where PPN is ahead)", "",
              "| | " + " | ".join(KEYS) + " |", "|---" * 5 + "|"]  # fmt: skip
    for part in ("patches", "field"):
        lines.append(f"| {part} | " + " | ".join(
            f"{summary[f'{part}/{k}']['mean_difference']:+.3f} "
            f"({summary[f'{part}/{k}']['ppn_ahead_seeds']}/{len(seeds)})" for k in KEYS)
            + " |")  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    return res


if __name__ == "__main__":
    main()
