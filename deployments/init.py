#!/usr/bin/env python
"""Initialise a Prefect server for ptyflow (idempotent; safe to run again at any time).

1. wait until the server's ``/health`` answers,
2. create the process work pool (default ``ptyflow-process``) unless it exists,
3. deploy every deployment of ``deployments/prefect.yaml`` (``prefect deploy --all`` from
   the repository root, which upserts them by name).

Usage::

    python deployments/init.py --api-url http://127.0.0.1:4200/api [--pool NAME]

or ``ptyflow server deploy``. The reprocess-facility deployment scans
``$PTYFLOW_FACILITY_ROOT/raw`` (default ``~/ptyflow-facility``, created) and writes to
``$PTYFLOW_FACILITY_ROOT/processed``; set the variable before running this script to
point it elsewhere, or edit the deployment's parameters in the UI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Runnable as a plain script from anywhere: the flows package lives one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--api-url",
        default=os.environ.get("PREFECT_API_URL"),
        help="Prefect API, e.g. http://127.0.0.1:4200/api (default $PREFECT_API_URL)",
    )
    ap.add_argument("--pool", default="ptyflow-process", help="process work pool name")
    ap.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the server's health"
    )
    args = ap.parse_args(argv)
    if not args.api_url:
        ap.error("give --api-url or set PREFECT_API_URL")

    from flows.serve import deploy_all

    try:
        deploy_all(args.api_url, pool=args.pool, timeout=args.timeout)
    except (TimeoutError, RuntimeError) as exc:
        print(f"init failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
