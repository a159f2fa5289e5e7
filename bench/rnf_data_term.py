"""RNF's data term, one factor at a time, in the yardstick grid's geometry (issue #19).

Runs RNF on one grid cell's tuning cases (default) or test cases with the given option
variants over the grid's frozen RNF settings for the cell's modality
(``bench/grid_settings.json``: lr 3e-3 in Fourier, 3.3e-4 in near field) and appends one row
per run to a JSON file (resumable: finished rows are kept)::

    python bench/rnf_data_term.py tune-ff-25-1e5 '[{"loss": "l1"}, {}]' out.json
    python bench/rnf_data_term.py ff-100-1e4 '[{}]' out.json --cases test
    python bench/rnf_data_term.py ff-100-1e6 '[{}]' out.json --k-sigma 2
    python bench/rnf_data_term.py ff-25-1e6 '[{}, {"mu": 0.3}]' out.json --engine-seeds 3
    python bench/rnf_data_term.py nf-100-1e6 '[{}]' out.json --cases test --only-cases 3

A variant ``{}`` runs the engine's defaults: since hypothesis 21 ``loss`` / ``mu`` are
``"auto"`` (smooth L1 and mu per measurement at low counts or, since hypothesis 24, on sparse
scans, else L1 and 0.1;
:mod:`ptytasks.engines.data_term`); name ``{"loss": "l1", "mu": 0.1}`` for the former
defaults.

``--engine-seeds N`` runs each case with N engine seeds (the case seed, then +1000, +2000,
...; the grid runs only the first): on ff-25-1e6's tuning case 101 engine seeds alone move
RNF's error 0.0327-0.0406 (``records/rnf-tuning-h11-h19-ae32615.json``), as much as most
one-factor effects, so a decision on one seed per case can be noise.

``--k-sigma K`` scales the engine's noise threshold to ``K`` amplitude-noise units (the
default rule is 4; :func:`ptytasks.engines.losses.noise_threshold`): the candidates the
default was chosen from. The record of the choice is
``bench/results/records/rnf-data-term-bb3e1b4.json`` (docs/rnf.md, hypotheses).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import grid_cells as G  # noqa: E402
from bench._machine import machine_info  # noqa: E402

SETTINGS_FILE = Path(__file__).resolve().parent / "grid_settings.json"


def _scale_threshold(k_sigma: float) -> None:
    import ptytasks.engines.rnf as R

    rule = R.noise_threshold
    R.noise_threshold = lambda loss, delta, frames, scale: rule(loss, delta, frames,
                                                                 scale) * k_sigma / 4.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell")
    ap.add_argument("variants", help="JSON list of RNFOptions overrides")
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=None, help="the grid's epochs by default")
    ap.add_argument("--cases", choices=("tuning", "test"), default="tuning")
    ap.add_argument("--k-sigma", type=float, default=None)
    ap.add_argument("--engine-seeds", type=int, default=1,
                    help="engine seeds per case: the case seed, then +1000, +2000, ...")
    ap.add_argument("--only-cases", type=int, nargs="+", default=None,
                    help="run only the cases with these seeds (e.g. 3 of the test cases)")
    a = ap.parse_args(argv)
    cell = G.cell(a.cell)
    epochs = a.epochs or G.EPOCHS[cell.modality]
    # the rate the grid froze for RNF in this modality (bench/grid_settings.json): the
    # yardstick's settings, which the variants change one at a time
    frozen = json.loads(SETTINGS_FILE.read_text())["settings"][cell.modality]["rnf"]
    if a.k_sigma is not None:
        _scale_threshold(a.k_sigma)
    rows = json.loads(a.out.read_text())["rows"] if a.out.exists() else []
    # a finished row is one cell's case under one variant (one file may hold several cells)
    # (rows without "engine_seed" ran the case seed, as the grid does)
    done = {(r["cell"], r["seed"], json.dumps(r["settings"], sort_keys=True), r.get("k_sigma"),
             r.get("engine_seed", r["seed"])) for r in rows}  # fmt: skip
    cases = G.TEST_CASES if a.cases == "test" else G.TUNING_CASES
    if a.only_cases:
        cases = tuple(c for c in cases if c[0] in a.only_cases)
        if not cases:
            ap.error(f"--only-cases {a.only_cases}: no such {a.cases} case")
    for seed, kind in cases:
        data, full = G.simulate_case(cell, seed, kind)
        truth, mask, probe = G.score_truth(data, full), G.score_mask(data), G.start_probe(data)
        for s, es in [(s, seed + 1000 * k) for k in range(max(1, a.engine_seeds))
                      for s in json.loads(a.variants)]:
            if (a.cell, seed, json.dumps(s, sort_keys=True), a.k_sigma, es) in done:
                continue
            t = time.time()
            run = {**frozen, **s}  # the grid's frozen RNF settings, the variant over them
            r = G.run_case_engine(data, truth, mask, probe, "rnf", run, epochs, seed=es)
            rows.append({"cell": a.cell, "cases": a.cases, "seed": seed, "object": kind,
                         "engine_seed": es, "settings": s, "run_settings": run,
                         "k_sigma": a.k_sigma, "epochs": epochs,
                         "error": r["complex_error"], "curve": r.get("curve"),
                         "wall_s": time.time() - t, "load": os.getloadavg()})  # fmt: skip
            print(a.cell, seed, es, s, a.k_sigma, round(r["complex_error"], 4), flush=True)
            a.out.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
