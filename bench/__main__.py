"""``python -m bench <suite> [--quick] [--device cpu|cuda] ...``: the benchmark suites.

Suites: ``grid`` (the yardstick: every engine with frozen settings chosen on disjoint
tuning cases, 3 test cases per cell; ``--tune`` chooses and freezes the settings),
``quality`` (error vs kept positions and dose, simulated, with ground truth),
``realdata`` (half-data FRC on the measured sets in ../shared/data), ``speed`` (time per
epoch and to a given error, against the FFT floor), ``pipeline`` (Prefect + Dask overhead
per tile, 1 -> 2 workers, memory per worker, gigapixel projection), ``all`` (every suite,
then the report), ``report`` (regenerate ``bench/results/report.md`` and the plots from the
JSON files), ``peers`` (which peer packages import, and their versions).

Results are labelled by device: ``bench/results/<suite>-<device>[-quick].json``.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SUITES = ("quality", "realdata", "speed", "pipeline")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="reduced grid (minutes, not hours)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N]")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every engine (default: 1 on CPU, else torch's)",
    )
    p.add_argument("--out", type=Path, default=None, help="results folder (bench/results)")
    p.add_argument(
        "--tag", default=None, help="suffix of the result files, for runs off the standard grids"
    )
    p.add_argument(
        "--engines",
        nargs="*",
        default=None,
        help="only these engines (rnf epie rpie ptychi-epie ptychi-rpie "
        "ptychi-lsqml ptychi-autodiff ptyrad)",
    )
    p.add_argument("--no-peers", action="store_true", help="skip the peer packages")
    p.add_argument(
        "--settings",
        action="append",
        default=None,
        metavar="ENGINE:JSON",
        help="engine settings override, e.g. 'rnf:{\"lr\": 0.001}' (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    from bench import suite_grid, suite_pipeline, suite_quality, suite_realdata, suite_speed

    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="suite", required=True)
    mods = {
        "quality": suite_quality,
        "realdata": suite_realdata,
        "speed": suite_speed,
        "pipeline": suite_pipeline,
    }
    for name, mod in mods.items():
        p = sub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        _common(p)
        mod.add_args(p)
    p = sub.add_parser("grid", help=(suite_grid.__doc__ or "").strip().splitlines()[0])
    _common(p)
    suite_grid.add_args(p)
    p = sub.add_parser("all", help="every suite, then the report")
    _common(p)
    for mod in mods.values():
        mod.add_args(p)
    p.add_argument("--skip", nargs="*", default=[], choices=SUITES, help="suites to leave out")
    p = sub.add_parser("report", help="regenerate report.md and plots from the JSON results")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--allow-mixed", action="store_true",
                   help="render results from different commits, each labelled with its own")
    p = sub.add_parser("peers", help="which peers import (versions, import time)")
    return ap


def _configure(args) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    if getattr(args, "threads", None) is None and hasattr(args, "device"):
        args.threads = 1 if not str(args.device).startswith("cuda") else 0
    if hasattr(args, "device") and str(args.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available here")
        if not args.threads:
            args.threads = torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.suite == "peers":
        from bench import peers

        print(json.dumps(peers.probe(), indent=1))
        return 0
    if args.suite == "report":
        from bench import report

        try:
            print(report.write_report(args.out, allow_mixed=args.allow_mixed))
        except report.MixedCommits as exc:
            print(f"bench report: {exc}", file=sys.stderr)
            return 2
        return 0
    _configure(args)
    from bench import suite_common as C

    mods = {}
    from bench import suite_grid, suite_pipeline, suite_quality, suite_realdata, suite_speed

    mods = {
        "grid": suite_grid,
        "quality": suite_quality,
        "realdata": suite_realdata,
        "speed": suite_speed,
        "pipeline": suite_pipeline,
    }
    todo = [args.suite] if args.suite != "all" else [s for s in SUITES if s not in args.skip]
    t0 = time.perf_counter()
    failed = []
    for name in todo:
        C.log(f"=== suite {name} ({'quick' if args.quick else 'full'}, {args.device}) ===")
        t = time.perf_counter()
        try:
            mods[name].run(args)
        except Exception as exc:  # noqa: BLE001 - one suite failing must not hide the rest
            import traceback

            traceback.print_exc()
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
        C.log(f"=== suite {name} done in {time.perf_counter() - t:.0f} s ===")
    if args.suite == "all":
        from bench import report

        try:
            C.log(f"report: {report.write_report(args.out)}")
        except report.MixedCommits as exc:  # the suites' JSON files are written regardless
            C.log(f"report not written: {exc}")
    C.log(f"total {time.perf_counter() - t0:.0f} s")
    if failed:
        print("FAILED suites:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
