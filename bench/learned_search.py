"""Short-budget architecture search behind the committed PPN (docs/learned.md, issue #9).

Every variant trains for 600 steps on the same seeded stream (``TrainConfig`` with the
overrides below; one torch thread) and is scored by its validation loss at the last step,
the loss the plateau scheduler sees. ``baseline`` is the PPN of the first committed weights
(8 x 8 patches, no stem); the PtychoNN row is the reference the variants must reach.
Training is deterministic for a given seed and thread count, so the table is reproducible.

Usage::

    python bench/learned_search.py [--jobs 2]   # bench/results/learned-search-<host>.json/.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
BASE = {"model": "ppn", "steps": 600, "patch": 8, "local_stem": 0}
VARIANTS: dict[str, dict] = {
    "ptychonn": {"model": "ptychonn"},
    "baseline": {},
    "nonlocal stem 16": {"stem": 16},
    "nonlocal stride 2": {"nonlocal_stride": 2},
    "patch 4": {"patch": 4},
    "dim 64, 4 heads": {"dim": 64, "heads": 4},
    "lr 3e-3": {"lr": 3e-3},
    "lr 3e-4": {"lr": 3e-4},
    "local stem 16": {"local_stem": 16},
    "local stem 16, patch 4 (committed)": {"local_stem": 16, "patch": 4},
}


def run_variant(item: tuple[str, dict]) -> dict:
    import torch

    from ptytasks.learned.train_inversion import TrainConfig, train

    name, over = item
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**BASE, **over})
    _, rep = train(cfg, log=lambda s: None)
    last = rep["history"][-1]
    return {"name": name, "overrides": over, "val_loss_last": last["val_loss"],
            "val_loss_best": rep["best_val_loss"], "train_seconds": rep["train_seconds"],
            "parameters": rep["parameters"]}  # fmt: skip


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_variant, VARIANTS.items()))
    host = os.environ.get("BENCH_HOST", "vm")
    res = {"machine": {"host": host, "python": platform.python_version(), "jobs": args.jobs,
                       "load": [round(x, 2) for x in os.getloadavg()]},
           "base": BASE, "rows": rows}  # fmt: skip
    out = REPO / "bench" / "results" / f"learned-search-{host}.json"
    out.write_text(json.dumps(res, indent=1))
    lines = [f"# PPN short-budget search ({host})", "",
             f"600 steps of 32 samples, seed 0, one thread per run, {args.jobs} runs at once.",
             "", "| variant | val loss (step 600) | best | parameters | s |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['name']} | {r['val_loss_last']:.4f} | {r['val_loss_best']:.4f} | "
              f"{r['parameters']} | {r['train_seconds']:.0f} |" for r in rows]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    return rows


if __name__ == "__main__":
    main()
