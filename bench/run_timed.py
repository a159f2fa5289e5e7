"""Time one ``ptyflow run`` end to end and write its quality beside the time, as JSON.

Usage::

    python bench/run_timed.py --out bench/results/star-rnf-cpu.json --fresh -- \\
        DATA.npz.bz2 -o /tmp/star.zarr --config deployments/configs/farfield-siemens.yaml \\
        --engine rnf --no-half-data

Everything after ``--`` goes to ``ptyflow run`` unchanged. The JSON holds the command,
the wall seconds, the exit code, whether the run store existed before (a store with
finished steps times a resumed run: ``--fresh`` deletes it first), the run's metrics
(``<store>_metrics.csv``, written by this run only: trusted pixels, half-data FRC when
asked, truth errors for simulated files; none when the run failed) and the machine
description with the git commit and load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._machine import machine_info  # noqa: E402


def _store(args: list[str]) -> Path | None:
    for flag in ("-o", "--out"):
        if flag in args and args.index(flag) + 1 < len(args):
            return Path(args[args.index(flag) + 1])
    return None


def _metrics(store: Path | None) -> dict:
    if store is None:
        return {}
    path = store.with_name(store.stem + "_metrics.csv")
    if not path.exists():
        return {}
    out = {}
    with path.open() as fh:  # rows of (metric, value)
        for row in csv.DictReader(fh):
            try:
                out[row["metric"]] = float(row["value"])
            except (KeyError, TypeError, ValueError):
                continue
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: run_timed.py --out FILE.json [--fresh] -- <ptyflow run arguments>",
              file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fresh", action="store_true", help="delete the run store first")
    ap.add_argument("--label", default=None)
    args = ap.parse_args(argv[:cut])
    run_args = argv[cut + 1:]
    store = _store(run_args)
    if args.fresh and store is not None:
        shutil.rmtree(store, ignore_errors=True)
    existed = store is not None and store.exists()
    if store is not None:  # an earlier run's table must not stand for this run's
        store.with_name(store.stem + "_metrics.csv").unlink(missing_ok=True)
    exe = shutil.which("ptyflow")
    cmd = [exe, "run", *run_args] if exe else [sys.executable, "-m", "flows.cli", "run",
                                                  *run_args]
    doc = {"suite": "timed-run", "label": args.label, "machine": machine_info(),
           "command": ["ptyflow", "run", *run_args], "store_existed": existed}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    doc["seconds"] = time.perf_counter() - t0
    doc["exit_code"] = proc.returncode
    doc["load_end"] = list(os.getloadavg())
    doc["metrics"] = _metrics(store) if proc.returncode == 0 else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float))
    print(f"{doc['seconds']:.0f} s, exit {proc.returncode}, metrics {doc['metrics']}")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
