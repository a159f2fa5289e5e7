"""Tuning for the yardstick grid: each engine's candidates on the tuning cases, the
lowest median frozen in a settings file (``python -m bench grid --tune``; the grid's
steps are described in :mod:`bench.suite_grid`, which runs this and holds the run cache)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench import grid_cells as G
from bench import suite_common as C
from bench import suite_grid as S

RULE = ("lowest median final complex error over the tuning cases (ties: the earlier "
        "candidate, the engine's defaults first)")  # fmt: skip


def tune(args) -> dict:
    """Choose and freeze each engine's setting (see :mod:`bench.suite_grid`).

    With ``--modalities`` / ``--engines`` only those entries are (re)tuned and written into
    the existing file; every entry records the code state it was tuned with.
    """
    from bench._machine import git_state

    if getattr(args, "settings", None):
        raise SystemExit("--settings with --tune: the tuning chooses among the candidates "
                         "in bench/grid_cells.py; overrides would be frozen unseen")  # fmt: skip
    code = git_state()
    cache = args.cache or C.RESULTS / "grid-cache"
    cases = S.Cases()
    path = args.settings_file
    out = json.loads(path.read_text()) if path.exists() else {}
    budget = getattr(args, "budget", "standard")
    on_cell = G.cell(args.tune_cell) if getattr(args, "tune_cell", None) else None
    own = "--budget " + budget if budget != "standard" else "--tune-cell" if on_cell else None
    if own and Path(path).resolve() == S.SETTINGS_FILE.resolve():
        raise SystemExit(f"{own}: name its own --settings-file (the standard budget's "
                         f"{S.SETTINGS_FILE.name} is what the grid reads by default)")
    picked = getattr(args, "modalities", None)
    if on_cell and picked and list(picked) != [on_cell.modality]:
        raise SystemExit(f"--tune-cell {on_cell.name} tunes the {on_cell.modality} engines "
                         f"only; --modalities {' '.join(picked)} contradicts it")
    # A cell-tuned file holds that cell's modality only, so it names no other tuning cell.
    tuning_cells = {on_cell.modality: on_cell} if on_cell else dict(G.TUNING_CELLS)
    cands = G.candidates(budget)
    if out.get("candidates") != json.loads(json.dumps(cands)) or \
            out.get("tuned_on_cell") != (on_cell and on_cell.name):
        out = {}  # another candidate list or tuning cell: nothing in the old file stands
    out.update({"rule": RULE, "budget": budget, "candidates": cands,
                "tuning_cases": G.TUNING_CASES,
                "tuning_cells": {m: c.to_dict() for m, c in tuning_cells.items()},
                "tuned_on_cell": on_cell and on_cell.name, "epochs": G.EPOCHS})  # fmt: skip
    for k in ("scores", "settings", "tuned_with", "skipped"):
        out.setdefault(k, {})
    out.setdefault("machine", C.run_header("grid-tune", args)["machine"])
    modalities = [on_cell.modality] if on_cell else picked or list(G.TUNING_CELLS)
    for modality in modalities:
        cell = tuning_cells[modality]
        engines, skipped = S.grid_engines(modality, args)
        out["skipped"].setdefault(modality, {}).update(skipped)
        for engine in engines:
            meds = []
            for cand in cands[engine]:
                errs = [S.run_cached(cache, "tune", cell, case, engine, cand, cases, code, args)
                        .get("complex_error", float("nan")) for case in G.TUNING_CASES]
                meds.append(_median(errs))
            best = choose(meds)
            out["scores"].setdefault(modality, {})[engine] = meds
            out["settings"].setdefault(modality, {})[engine] = cands[engine][best]
            out["tuned_with"].setdefault(modality, {})[engine] = {
                **code, "load_average": C.load_average(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
            out["skipped"][modality].pop(engine, None)
            C.log(f"tune {modality} {engine}: medians {[round(m, 4) for m in meds]} -> "
                  f"{cands[engine][best] or 'defaults'}")
    path.write_text(json.dumps(out, indent=1, default=C._json_default) + "\n")
    C.log(f"frozen settings: {path}")
    return out


def choose(medians: list[float]) -> int:
    """Index of the lowest finite median (the first on ties; 0 when none is finite)."""
    vals = [m if np.isfinite(m) else np.inf for m in medians]
    return int(np.argmin(vals)) if np.isfinite(min(vals)) else 0


def _median(v) -> float:
    a = np.asarray([x for x in v if x is not None], float)
    a = a[np.isfinite(a)]
    # A failed run counts as the worst outcome, not as a missing one.
    return float(np.median(a)) if a.size == len(v) else float("inf")
