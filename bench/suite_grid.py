"""The yardstick grid: every engine, one frozen setting each, 3 test cases per cell.

Two steps, both resumable (each finished run is cached as one JSON file under
``bench/results/grid-cache/``, keyed by the code commit, so a stopped run continues where it
stopped and a run of other code never reuses a cached result):

``python -m bench grid --tune``
    For every modality and engine, each of its three candidate configurations
    (:data:`bench.grid_cells.CANDIDATES`, the same budget for every engine) runs on the
    tuning cases only; the configuration with the lowest median final complex error is
    chosen (ties: the earlier, i.e. the defaults) and frozen in ``bench/grid_settings.json``
    with every score. Commit that file before the grid run. ``--budget wide`` tunes over
    nine candidates per engine (each crossed with its probe step x 3 either way,
    :func:`bench.grid_cells.candidates`) into its own ``--settings-file``, which the grid
    then reads like the standard one. ``--tune-cell CELL`` tunes on the tuning cases
    simulated in that cell's geometry (an audit; its file runs that cell only). The tuning
    itself lives in :mod:`bench.grid_tune`.
``python -m bench grid [--quick]``
    Every cell x test case x engine with the frozen settings, unchanged. Writes
    ``bench/results/grid-<device>[-quick].json`` and ``.md``: per cell and engine the median
    and min-max over the test cases of the final error at equal epochs, and of the error
    each engine had reached when the fastest engine of that case finished (equal time).

The result records the commit and dirty flag of every run; a grid whose cached runs come
from different commits is refused unless ``--allow-mixed`` (then every row keeps its own).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from bench import grid_cells as G
from bench import suite_common as C

SETTINGS_FILE = Path(__file__).resolve().parent / "grid_settings.json"


class MixedCommits(RuntimeError):
    pass


def add_args(p) -> None:
    p.add_argument("--tune", action="store_true",
                   help="choose each engine's setting on the tuning cases and freeze it")
    p.add_argument("--cells", nargs="*", default=None,
                   help="only these cells (space- or comma-separated)")
    p.add_argument("--test-cases", default=None, metavar="SEED:KIND,...",
                   help="score on these cases instead of the grid's test cases 1-3 (a fresh "
                   "held-out set no decision has touched; tuning cases refused)")
    p.add_argument("--modalities", nargs="*", default=None, choices=list(G.TUNING_CELLS),
                   help="--tune: only these modalities (other entries of the file stay)")
    p.add_argument("--cache", type=Path, default=None,
                   help="run cache folder (bench/results/grid-cache)")
    p.add_argument("--settings-file", type=Path, default=SETTINGS_FILE)
    p.add_argument("--tune-cell", default=None, metavar="CELL",
                   help="--tune on the tuning cases in this grid cell's geometry instead of "
                   "its modality's tuning cell (an audit: write it to its own "
                   "--settings-file, which then runs that cell only)")
    p.add_argument("--budget", choices=("standard", "wide"), default="standard",
                   help="--tune: the candidates (wide: x3 probe steps, nine per engine; "
                   "write it to its own --settings-file)")
    p.add_argument("--resummarise", type=Path, default=None, metavar="GRID_JSON",
                   help="recompute the summary and the .md of a finished grid JSON (no runs)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="summarise cached runs of different commits (each row labelled)")


def cell_names(cells: list[str] | None, quick: bool) -> list[str]:
    """``--cells`` as given (space- or comma-separated), else the quick or full grid."""
    names = [n for c in cells or () for n in c.split(",") if n]
    return names or (list(G.QUICK_CELLS) if quick else [c.name for c in G.CELLS])


# ----------------------------------------------------------------------------- cache
def parse_cases(text: str | None) -> tuple[tuple[int, str], ...]:
    """``"240:moon,241:cell"`` as cases; ``None``: the grid's test cases. A tuning case, or
    an object kind the simulator does not draw, is refused."""
    if not text:
        return G.TEST_CASES
    from ptytasks.simulate.objects import KINDS

    cases = []
    for item in text.split(","):
        seed, _, kind = item.partition(":")
        case = (int(seed), kind.strip())
        if case[1] not in KINDS:
            raise ValueError(f"--test-cases: unknown object kind {case[1]!r}")
        if case[0] in {s for s, _ in G.TUNING_CASES}:
            raise ValueError(f"--test-cases: seed {case[0]} is a tuning case")
        cases.append(case)
    return tuple(cases)


def _key(kind: str, cell: G.Cell, case, engine: str, settings: dict, epochs: int,
         code: dict, where: dict | None = None) -> str:
    """The cache key of one run. ``where`` (device, threads) enters it unless it is the
    default CPU, one-thread setting, so a GPU or multi-thread run never reuses CPU rows
    (and the CPU rows cached before keep their keys)."""
    parts = [kind, cell.to_dict(), list(case), engine, settings, epochs,
             code.get("commit"), code.get("dirty")]  # fmt: skip
    if where and where != _DEFAULT_WHERE:
        parts.append(where)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


_DEFAULT_WHERE = {"device": "cpu", "threads": 1}


def _where(args) -> dict:
    """Where the runs execute: the device and the torch threads (the CPU default is 1)."""
    device = str(getattr(args, "device", "cpu") or "cpu")
    threads = getattr(args, "threads", None)
    return {"device": device, "threads": threads or (1 if device == "cpu" else None)}


class Cases:
    """Simulated cases, their start probes and masks, built once per run of the suite
    (the last ``keep`` cases stay in memory: tuning alternates between its cases)."""

    def __init__(self, keep: int = 4):
        self._d: dict = {}
        self._keep = keep

    def get(self, cell: G.Cell, case):
        k = (cell.name, tuple(case))
        if k not in self._d:
            data, full = G.simulate_case(cell, *case)
            while len(self._d) >= self._keep:
                self._d.pop(next(iter(self._d)))
            self._d[k] = (data, G.score_truth(data, full), G.score_mask(data),
                          G.start_probe(data))  # fmt: skip
        return self._d[k]


def run_cached(cache: Path, kind: str, cell: G.Cell, case, engine: str, settings: dict,
                cases: Cases, code: dict, args) -> dict:
    epochs = G.EPOCHS[cell.modality]
    where = _where(args)
    key = _key(kind, cell, case, engine, settings, epochs, code, where)
    f = cache / cell.name / f"{case[0]}-{engine}-{key}.json"
    if f.exists():
        return json.loads(f.read_text())
    data, truth, mask, probe = cases.get(cell, case)
    C.log(f"grid {kind}: {cell.name} seed {case[0]} ({case[1]}) {engine} {settings or ''}")
    row = G.run_case_engine(data, truth, mask, probe, engine, settings, epochs, seed=case[0],
                            threads=args.threads, device=args.device)  # fmt: skip
    row.update({"cell": cell.name, "seed": int(case[0]), "object_kind": case[1], "kind": kind,
                "code": code, "where": where, "load_average": C.load_average(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
    C.log(f"  -> error {row.get('complex_error', float('nan')):.4f}"
          + (f" ({row['error_message']})" if not row["ok"] else ""))  # fmt: skip
    f.parent.mkdir(parents=True, exist_ok=True)
    C.write_json(f, row)
    return row


def _overrides(args) -> dict[str, dict]:
    """``--settings ENGINE:JSON`` as ``{engine: settings}``; an unknown engine is refused
    (a typo would otherwise run the frozen settings under the override's name)."""
    from bench import peers

    names = {i.partition(":")[0] for i in getattr(args, "settings", None) or []}
    unknown = sorted(names - set(C.OURS) - set(peers.PEER_ENGINES))
    if unknown:
        raise SystemExit(f"--settings: unknown engine(s) {unknown}")
    return {e: C.engine_settings(args, e) for e in sorted(names)}


def grid_engines(modality: str, args) -> tuple[list[str], dict]:
    """The grid's engines for a modality that can run here, and why the others cannot."""
    want = getattr(args, "engines", None)
    avail = C.engine_list(args, modality)
    run, skipped = [], {}
    for e in G.ENGINES[modality]:
        if want and e not in want:
            continue
        if e in C.OURS or e in avail["run"]:
            run.append(e)
        else:
            skipped[e] = avail["skipped"].get(e, "not available")
    return run, skipped


def frozen_settings(path: Path) -> dict:
    if not Path(path).exists():
        raise SystemExit(f"{path}: no frozen settings; run `python -m bench grid --tune` "
                         "and commit the file first")  # fmt: skip
    doc = json.loads(Path(path).read_text())
    budget = doc.get("budget", "standard")
    if budget not in ("standard", "wide"):
        raise SystemExit(f"{path}: field 'budget' is {budget!r}, not 'standard' or 'wide'")
    if doc.get("candidates") != json.loads(json.dumps(G.candidates(budget))):
        raise SystemExit(f"{path}: field 'candidates' differs from bench/grid_cells.py's "
                         f"{doc.get('budget', 'standard')} budget; re-run the tuning")
    return doc


# ----------------------------------------------------------------------------- grid
def run(args) -> dict:
    from bench._machine import git_state

    if getattr(args, "tune", False):
        from bench.grid_tune import tune

        return tune(args)
    if getattr(args, "resummarise", None):
        return resummarise(args.resummarise, allow_mixed=args.allow_mixed)
    frozen = frozen_settings(args.settings_file)
    test_cases = parse_cases(getattr(args, "test_cases", None))
    code = git_state()
    cache = args.cache or C.RESULTS / "grid-cache"
    names = cell_names(args.cells, args.quick)
    head = C.run_header("grid", args)
    # ``--settings ENGINE:JSON`` (diagnostics) go on top of the frozen settings; they are
    # recorded, keyed in the cache and stated in the headline, which is then not the grid's.
    overrides = _overrides(args)
    head.update({"code": code, "frozen_settings": frozen["settings"], "overrides": overrides,
                 "settings_file": str(args.settings_file), "rule": frozen["rule"],
                 "test_cases": test_cases, "epochs": G.EPOCHS,
                 "geometry": G.SETTINGS})  # fmt: skip
    rows, skipped, t0 = [], {}, time.perf_counter()
    cases = Cases()
    path = C.result_path("grid", args.device, args.quick, args.out, getattr(args, "tag", None))
    for name in names:
        cell = G.cell(name)
        if frozen.get("tuned_on_cell") not in (None, name):
            raise SystemExit(f"{args.settings_file}: tuned on cell {frozen['tuned_on_cell']} "
                             f"(field 'tuned_on_cell'); it does not run cell {name}")
        engines, skipped[name] = grid_engines(cell.modality, args)
        for case in test_cases:
            for engine in engines:
                s = frozen["settings"].get(cell.modality, {}).get(engine)
                if s is None:
                    skipped[name][engine] = "no frozen setting (not tuned here)"
                    continue
                s = {**s, **overrides.get(engine, {})}
                rows.append(run_cached(cache, "test", cell, case, engine, s, cases, code, args))
        C.write_json(path, {**head, "rows": rows, "skipped": skipped, "partial": True})
    out = {**head, "rows": rows, "skipped": skipped, "partial": False,
           "seconds": time.perf_counter() - t0,
           "cells": {n: G.cell(n).to_dict() for n in names}}  # fmt: skip
    out["commits"] = check_commits(rows, allow_mixed=args.allow_mixed)
    out["summary"] = summarise(rows)
    C.write_json(path, out)
    path.with_suffix(".md").write_text(markdown(out))
    C.log(f"grid: {path} ({len(rows)} runs)")
    return out


def resummarise(path: Path, *, allow_mixed: bool = False) -> dict:
    """Summary and markdown of a finished grid JSON from its rows, by this code (recorded
    as ``summary_code``; every row keeps the code state it ran with)."""
    from bench._machine import git_state

    doc = json.loads(Path(path).read_text())
    doc["commits"] = check_commits(doc["rows"], allow_mixed=allow_mixed)
    doc["summary"] = summarise(doc["rows"])
    doc["summary_code"] = git_state()
    C.write_json(Path(path), doc)
    Path(path).with_suffix(".md").write_text(markdown(doc))
    return doc


def check_commits(rows: list[dict], *, allow_mixed: bool) -> list[dict]:
    """The distinct code states of ``rows``; refuses more than one unless allowed."""
    seen = {(r["code"].get("commit"), r["code"].get("dirty")) for r in rows if "code" in r}
    states = [{"commit": c, "dirty": d} for c, d in sorted(seen, key=str)]
    if len(states) > 1 and not allow_mixed:
        raise MixedCommits(f"grid rows come from {len(states)} code states {states}; rerun "
                           "or pass --allow-mixed")  # fmt: skip
    return states


def equal_time(curves: dict[str, list[dict]], budget: float) -> dict[str, float]:
    """Each engine's error at its last snapshot within ``budget`` seconds of epochs
    (``inf``: not one epoch finished that early -- nothing to show yet, e.g. a peer whose
    first epoch carries its initialisation)."""
    out = {}
    for e, cur in curves.items():
        pts = [p for p in cur if np.isfinite(p.get("seconds", np.nan))
               and p["seconds"] <= budget * (1 + 1e-9)]
        out[e] = float(pts[-1]["error"]) if pts else float("inf")
    return out


def summarise(rows: list[dict]) -> dict:
    """Per cell and engine: median, min and max over the test cases of the final error
    (equal epochs) and of the equal-time error; the best engine of each view."""
    out: dict = {}
    for cell in dict.fromkeys(r["cell"] for r in rows):
        rs = [r for r in rows if r["cell"] == cell]
        eq_time: dict[str, list] = {}
        budgets = []
        for seed in sorted({r["seed"] for r in rs}):
            # a run that ended without a finite error (PIE stops early on divergence and
            # still returns) neither sets the budget nor competes in it
            ok = [r for r in rs if r["seed"] == seed and r.get("ok")
                  and np.isfinite(r.get("complex_error", np.nan))]
            totals = [r["times"]["compute_s"] for r in ok if r.get("times")]
            if not totals:
                continue
            budget = min(totals)
            budgets.append(budget)
            et = equal_time({r["engine"]: r.get("curve", []) for r in ok}, budget)
            for r in rs:
                if r["seed"] == seed:
                    eq_time.setdefault(r["engine"], []).append(et.get(r["engine"], np.nan))
        engines = {}
        for e in dict.fromkeys(r["engine"] for r in rs):
            fin = [r.get("complex_error", np.nan) for r in rs if r["engine"] == e]
            frc = [r.get("frc_resolution", np.nan) for r in rs if r["engine"] == e]
            epoch_s = [r["times"]["epoch_s_median"] for r in rs
                       if r["engine"] == e and r.get("times")]
            engines[e] = {"equal_epochs": _stats(fin), "equal_time": _stats(eq_time.get(e, [])),
                          "frc_truth": _stats(frc),
                          "epoch_s_median": float(np.median(epoch_s)) if epoch_s else None}
        out[cell] = {"engines": engines, "time_budget_s": budgets,
                     "best_equal_epochs": _best(engines, "equal_epochs"),
                     "best_equal_time": _best(engines, "equal_time")}  # fmt: skip
        at_best = subject_at_best_time(rs, engines)
        if at_best is not None:
            out[cell]["subject_at_best_time"] = at_best
    return out


def subject_at_best_time(rows: list[dict], engines: dict) -> dict | None:
    """Issue #19's wall-time view: the default engine's error at the compute time the best
    *other* engine (lowest median final error) took for its run, case by case, and its
    ratio to that engine's final error. ``None`` without the default engine or a rival."""
    others = {e: s for e, s in engines.items() if e != C.SUBJECT}
    best = _best(others, "equal_epochs")
    if C.SUBJECT not in engines or best is None:
        return None
    at, ratio, budgets = [], [], []
    for seed in sorted({r["seed"] for r in rows}):
        by = {r["engine"]: r for r in rows if r["seed"] == seed}
        b, own = by.get(best), by.get(C.SUBJECT)
        if b is None or own is None or not b.get("times"):
            continue
        budget = b["times"]["compute_s"]
        err = equal_time({C.SUBJECT: own.get("curve", [])}, budget)[C.SUBJECT] \
            if own.get("ok") and np.isfinite(own.get("complex_error", np.nan)) else np.nan
        budgets.append(budget)
        at.append(err)
        ratio.append(err / b["complex_error"])
    return {"engine": best, "budget_s": budgets, "error": _stats(at), "ratio": _stats(ratio)}


def _stats(v) -> dict:
    """Median, min, max over the cases; NaN (a failed run) makes the whole entry failed,
    ``inf`` (nothing yet within the time budget) ranks as the worst value."""
    a = np.asarray(v, float)
    n_failed = int(np.isnan(a).sum())
    if n_failed or not len(a):
        # A failed case is reported, not dropped: the median of the rest would flatter.
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"),
                "n": len(a), "n_failed": n_failed}  # fmt: skip
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "n": len(a), "n_failed": 0, "n_not_reached": int(np.isinf(a).sum())}


def _best(engines: dict, view: str) -> str | None:
    cand = {e: s[view]["median"] for e, s in engines.items() if np.isfinite(s[view]["median"])}
    return min(cand, key=cand.get) if cand else None


def markdown(doc: dict) -> str:
    code = ", ".join(f"{s['commit'][:7] if s['commit'] else '?'}"
                     + (" (dirty)" if s["dirty"] else "") for s in doc["commits"])
    lines = [f"# Yardstick grid ({doc['device']}{', quick' if doc['quick'] else ''})", "",
             f"Code: {code}. Settings: `{Path(doc['settings_file']).name}` (rule: "
             f"{doc['rule']}). Test cases (seed, object): "
             + ", ".join(f"{s} {o}" for s, o in doc["test_cases"]) + ". Complex error over "
             "the lit area, median [min-max] over the cases; equal time: the error each "
             "engine had reached when the fastest engine of the case finished its epochs.",
             ""]  # fmt: skip
    if doc.get("overrides"):
        lines += ["**Not the frozen settings**: overrides " + ", ".join(
            f"{e} `{json.dumps(v, sort_keys=True)}`" for e, v in doc["overrides"].items())
            + ".", ""]  # fmt: skip
    for cell, s in doc["summary"].items():
        c = doc["cells"][cell]
        lines += [f"## {cell}: {c['modality']}, {c['scan']}, {c['keep']:.0%} kept, "
                  f"dose {c['dose']:g}", "",
                  f"Best at equal epochs: **{s['best_equal_epochs']}**; at equal time "
                  f"({_fmt_list(s['time_budget_s'])} s): **{s['best_equal_time']}**.", "",
                  *_at_best_line(s),
                  "| engine | equal epochs | equal time | FRC vs truth (c/px) | s/epoch |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for e, v in s["engines"].items():
            ep = v["epoch_s_median"]
            lines.append(f"| {e} | {_fmt(v['equal_epochs'])} | {_fmt(v['equal_time'])} | "
                         f"{_fmt(v['frc_truth'])} | {ep:.3f} |" if ep is not None else
                         f"| {e} | {_fmt(v['equal_epochs'])} | - | - | - |")  # fmt: skip
        lines.append("")
    if any(doc.get("skipped", {}).values()):
        lines += ["Not run: " + "; ".join(f"{c}: {e} ({why})" for c, d in doc["skipped"].items()
                                          for e, why in d.items()), ""]  # fmt: skip
    return "\n".join(lines)


def _at_best_line(s: dict) -> list[str]:
    a = s.get("subject_at_best_time")
    if a is None:
        return []
    return [f"{C.SUBJECT} at the compute time of the best other engine's run ({a['engine']}, "
            f"{_fmt_list(a['budget_s'])} s): {_fmt(a['error'])}; ratio to {a['engine']}'s "
            f"final error {_fmt(a['ratio'])}.", ""]


def _fmt(s: dict) -> str:
    if s["n_failed"]:
        return f"{s['n_failed']}/{s['n']} failed"

    def f(x):
        return "none yet" if np.isinf(x) else f"{x:.4f}"

    return f"{f(s['median'])} [{f(s['min'])}-{f(s['max'])}]"


def _fmt_list(v) -> str:
    return "/".join(f"{x:.1f}" for x in v)
