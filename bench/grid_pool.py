"""Pool held-out yardstick grids into one reading per cell (issue #19).

``python -m bench.grid_pool [SOURCES.json] [--extra GRID.json ...] [--exclude-adopted]
[--json OUT]``

Each fresh held-out set (``python -m bench grid --test-cases ...``) scores a few cases per
cell; pooled over every set whose rows the current code would reproduce, a cell has 12-21
cases, and RNF's median over the best other engine's is read with a bootstrap interval over
the cases. Which rows are still valid is a judgement per source, written down in the sources
file (default ``bench/grid_pool_sources.json``): a source is a grid JSON, optionally limited to
some cells, engines or code commits; later sources override earlier ones for the same (cell,
engine, case), so a rerun replaces the row it reruns. ``adopted_on`` names, per cell, the cases
that decided a hypothesis adopted for that cell; ``--exclude-adopted`` leaves them out (a
reading the adoption did not condition on). For every source commit the reading says how many
files under ``ptytasks/`` differ from the checkout's (``engine_files_changed``): where that is
not 0 the sources file's ``why`` must say why the rows still hold.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

from bench import suite_common as C

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_SOURCES = ROOT / "bench" / "grid_pool_sources.json"
RESAMPLES = 2000  # bootstrap resamples over cases (fixed seed 0)


def load_rows(sources: list[dict], *, base: Path = RESULTS,
              exclude: dict[str, list[int]] | None = None) -> dict[tuple, dict]:
    """``{(cell, engine, seed): row}`` from ``sources`` in order (later ones override).

    Each source: ``{"file": ..., "cells": [...], "engines": [...], "commits": [...]}``
    (``file`` relative to ``base`` unless absolute; the three lists optional, ``commits``
    matched on their first 7 characters). ``exclude``: cases left out per cell.
    """
    rows: dict[tuple, dict] = {}
    for src in sources:
        path = Path(src["file"])
        path = path if path.is_absolute() else base / path
        commits = {c[:7] for c in src.get("commits") or ()}
        for r in json.loads(path.read_text())["rows"]:
            if src.get("cells") and r["cell"] not in src["cells"]:
                continue
            if src.get("engines") and r["engine"] not in src["engines"]:
                continue
            if commits and r["code"]["commit"][:7] not in commits:
                continue
            if exclude and r["seed"] in exclude.get(r["cell"], ()):
                continue
            rows[(r["cell"], r["engine"], r["seed"])] = {**r, "_source": path.name}
    return rows


def _error(r: dict) -> float:
    return float(r["complex_error"]) if r.get("ok", True) else float("nan")


def reading(rows: dict[tuple, dict], *, resamples: int = RESAMPLES) -> dict:
    """Per cell: the cases (those RNF ran), each engine's median over them (engines missing a
    case are listed, not compared), the best other engine, RNF's ratio to it, RNF over the
    best other engine case by case, a 90 % bootstrap interval of the ratio (the best engine
    re-chosen in each resample) and the grid's own summary (equal epochs and equal time)."""
    from bench.suite_grid import summarise

    out = {}
    for cell in sorted({c for c, _, _ in rows}):
        by: dict[str, dict[int, float]] = {}
        for (c, e, s), r in rows.items():
            if c == cell:
                by.setdefault(e, {})[s] = _error(r)
        if C.SUBJECT not in by:
            continue
        seeds = sorted(by[C.SUBJECT])
        full = {e: np.array([v[s] for s in seeds]) for e, v in by.items() if sorted(v) == seeds}
        if len(full) < 2:
            continue
        meds = {e: float(np.median(v)) for e, v in full.items()}
        best = min((e for e in meds if e != C.SUBJECT), key=meds.get)
        per_case = [float(full[C.SUBJECT][i] / min(v[i] for e, v in full.items()
                                                   if e != C.SUBJECT))
                    for i in range(len(seeds))]  # fmt: skip
        rng = np.random.default_rng(0)
        boot = []
        for _ in range(resamples):
            i = rng.integers(0, len(seeds), len(seeds))
            m = {e: np.median(v[i]) for e, v in full.items()}
            boot.append(m[C.SUBJECT] / min(m[e] for e in m if e != C.SUBJECT))
        cell_rows = [r for (c, _, _), r in rows.items() if c == cell and r["engine"] in full]
        out[cell] = {
            "cases": seeds, "n": len(seeds), "medians": meds, "best_other": best,
            "ratio": meds[C.SUBJECT] / meds[best],
            "bootstrap_90": [float(x) for x in np.percentile(boot, [5, 95])],
            "per_case_rnf_over_best_of_case": [round(x, 3) for x in per_case],
            "rnf_lowest_cases": sum(x < 1 for x in per_case),
            "missing_engines": sorted(set(by) - set(full)),
            "sources": sorted({f"{r['_source']}@{r['code']['commit'][:7]}" for r in cell_rows}),
            "grid_summary": summarise(cell_rows)[cell],
        }  # fmt: skip
    return out


def engine_files_changed(commits: set[str]) -> dict[str, int | None]:
    """Per commit, how many files under ``ptytasks/`` differ from the checkout's (``None``:
    not in this repository's history)."""
    out = {}
    for c in sorted(commits):
        res = subprocess.run(["git", "diff", "--name-only", c, "--", "ptytasks/"], cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
        out[c] = len(res.stdout.split()) if res.returncode == 0 else None
    return out


def _line(cell: str, r: dict) -> str:
    at = r["grid_summary"].get("subject_at_best_time") or {}
    eq = at.get("ratio", {}).get("median")
    eq = f", at {at['engine']}'s run time {eq:.2f}x" if eq is not None else ""
    lo, hi = r["bootstrap_90"]
    return (f"{cell}: n={r['n']} RNF {r['medians'][C.SUBJECT]:.4f}, best other "
            f"{r['best_other']} {r['medians'][r['best_other']]:.4f} -> {r['ratio']:.3f}x "
            f"[{lo:.3f}, {hi:.3f}]; RNF lowest on {r['rnf_lowest_cases']}/{r['n']}{eq}"
            + (f"; missing {r['missing_engines']}" if r["missing_engines"] else ""))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.grid_pool", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="?", type=Path, default=DEFAULT_SOURCES)
    ap.add_argument("--extra", nargs="*", default=[],
                    help="grid JSONs added after the sources (reruns override their rows)")
    ap.add_argument("--exclude-adopted", action="store_true",
                    help="leave out the cases that decided an adopted hypothesis")
    ap.add_argument("--json", type=Path, default=None, help="write the reading here")
    args = ap.parse_args(argv)
    spec = json.loads(args.sources.read_text())
    # an extra grid is found from the working directory, else in bench/results
    sources = spec["sources"] + [{"file": str(Path(f).resolve()) if Path(f).exists() else f}
                                 for f in args.extra]
    rows = load_rows(sources, exclude=spec.get("adopted_on") if args.exclude_adopted else None)
    cells = reading(rows)
    for cell, r in cells.items():
        print(_line(cell, r))
    commits = {r["code"]["commit"][:7] for r in rows.values()}
    doc = {"sources_file": str(args.sources), "sources": sources,
           "exclude_adopted": args.exclude_adopted, "why": spec.get("why"),
           "engine_files_changed": engine_files_changed(commits), "cells": cells,
           "median_of": "complex error over the cases; ratio: RNF's median over the best "
                        f"other engine's; bootstrap: {RESAMPLES} resamples of the cases"}
    stale = {c: n for c, n in doc["engine_files_changed"].items() if n}
    if stale:
        print(f"engine code differs from these rows' commits (files under ptytasks/): {stale}")
    if args.json:
        from bench._machine import machine_info

        doc["machine"] = machine_info()
        args.json.write_text(json.dumps(doc, indent=1, default=float))
    return doc


if __name__ == "__main__":
    main()
