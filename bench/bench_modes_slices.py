"""Epoch cost of probe modes and object slices (issue #21): ``python -m bench.bench_modes_slices``.

rPIE (K modes x S slices, K, S in 1..3) and RNF (K, S in {1, 3}) on one simulated far-field
set (100 frames of 64 x 64; an electron probe with ``S`` slices 5 nm apart), measured back
to back in one process, one torch thread. Reports each configuration's median epoch time
and its ratio to the single-mode single-slice epoch of the same engine, beside the
``K x S`` the issue allows. Writes ``bench/results/modes-slices-<device>.json`` with the
machine, load and git state.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench._machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def _data(n_slices: int):
    from ptytasks.simulate import simulate

    kw = {"n_slices": 3, "slice_distance": 5e-9} if n_slices > 1 else {}
    return simulate("farfield", probe="electron", object_kind="lattice", overlap=0.75,
                    known_probe=True, seed=0, **kw)  # fmt: skip


def _epoch_seconds(engine: str, data, modes: int, slices: int, epochs: int, device: str):
    """Median epoch time of ``engine`` (the first epoch, which carries set-up, left out)."""
    from ptytasks.engines.registry import run_engine

    times: list[float] = []
    settings = {"epochs": epochs, "probe_modes": modes, "n_slices": slices, "device": device}
    run_engine(engine, data, settings, callback=lambda e, info: times.append(info["time"]))
    return float(np.median(times[1:] or times))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    thick, thin = _data(3), _data(1)
    grid = {"rpie": [(k, s) for s in (1, 2, 3) for k in (1, 2, 3)],
            "rnf": [(1, 1), (3, 1), (1, 3), (3, 3)]}  # fmt: skip
    rows = []
    for engine, configs in grid.items():
        base = None
        for k, s in configs:
            t0 = time.perf_counter()
            sec = _epoch_seconds(engine, thick if s > 1 else thin, k, s, a.epochs, a.device)
            base = sec if (k, s) == (1, 1) else base
            rows.append({"engine": engine, "modes": k, "slices": s, "epoch_s": sec,
                         "ratio": sec / base, "allowed": k * s,
                         "wall_s": time.perf_counter() - t0})  # fmt: skip
            print(f"{engine:5s} K={k} S={s}: {sec:.3f} s/epoch, {sec / base:.2f}x "
                  f"(K x S = {k * s})", flush=True)  # fmt: skip
    out = {"suite": "modes-slices", "machine": machine_info(),
           "settings": {"epochs": a.epochs, "device": a.device, "threads": 1,
                        "data": "simulate farfield electron lattice, 100 x 64^2, seed 0"},
           "rows": rows}  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"modes-slices-{a.device.split(':')[0]}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
