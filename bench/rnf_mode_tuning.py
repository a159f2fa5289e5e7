"""One RNF mixed-state setting tuned and scored (issue #21): ``python -m bench.rnf_mode_tuning``.

The case of ``tests/engines/test_mixed_states.py`` (simulated far field, 100 frames of
64 x 64, overlap 0.75, noise-free, three modes 0.6 / 0.3 / 0.1, blind start, RNF defaults
for ``--epochs``). Every value of ``--option`` runs with three modes on the tuning seeds;
the value with the lowest median object error is chosen there and only then run on the
held-out seeds, beside the single-mode run (the line: three modes at least 2x lower, power
fractions within 0.05). Errors over the windows' well-lit centres. Writes
``bench/results/records/rnf-<option>-<commit>.json`` with the machine, load and git state.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench._machine import machine_info
from bench.suite_common import load_average, write_json

RECORDS = Path(__file__).resolve().parent / "results" / "records"
FRACTIONS = (0.6, 0.3, 0.1)


def mixed_state_case(seed: int):
    """The simulated three-mode set of ``seed`` and the mask of its windows' well-lit
    centres (shared with ``tests/engines/test_mixed_states.py``)."""
    from ptytasks.simulate import simulate

    d = simulate("farfield", seed=seed, overlap=0.75, mode_fractions=FRACTIONS)
    n = d.frame_shape[0]
    mask = np.zeros(d.object_shape, bool)  # the well-lit centres of the windows
    for y, x in d.ground_truth["positions_px"].astype(int):
        mask[y + n // 4 : y + 3 * n // 4, x + n // 4 : x + 3 * n // 4] = True
    return d, mask


def _run(seed: int, modes: int, epochs: int, settings: dict) -> dict:
    from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
    from ptytasks.metrics.errors import quality_report

    d, mask = mixed_state_case(seed)
    t0 = time.perf_counter()
    r = reconstruct_rnf(d, RNFOptions(epochs=epochs, probe_modes=modes, **settings))
    err = quality_report(r.object, d.ground_truth["object"], mask)["complex_error"]
    fr = r.extras.get("mode_power_fractions")
    return {"seed": seed, "modes": modes, "settings": settings, "error": round(float(err), 5),
            "fractions": None if fr is None else np.round(fr, 4).tolist(),
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--option", default="lr_mode_decay", help="an RNFOptions field")
    p.add_argument("--values", default="1,0.3,0.1,0.03", help="comma-separated floats")
    p.add_argument("--tuning", default="10,11")
    p.add_argument("--held-out", default="0,1,2")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the test suite's 2)")
    p.add_argument("--out", type=Path, default=RECORDS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    seeds = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    info = machine_info(packages=("torch", "numpy"))
    rec = {"what": __doc__.splitlines()[0], "option": a.option, "epochs": a.epochs,
           "threads": a.threads, "machine": info, "load_average_start": load_average(),
           "tuning": [], "held_out": []}  # fmt: skip
    for v in (float(x) for x in a.values.split(",")):
        for s in seeds(a.tuning):
            rec["tuning"].append(_run(s, 3, a.epochs, {a.option: v}))
            print(json.dumps(rec["tuning"][-1]), flush=True)
    med = {v: float(np.median([r["error"] for r in rec["tuning"] if r["settings"][a.option] == v]))
           for v in {r["settings"][a.option] for r in rec["tuning"]}}  # fmt: skip
    best = min(med, key=med.get)
    rec["tuning_median"], rec["chosen"] = med, best
    for s in seeds(a.held_out):
        one = _run(s, 1, a.epochs, {})
        three = _run(s, 3, a.epochs, {a.option: best})
        gain = one["error"] / three["error"]
        frac = float(np.abs(np.asarray(three["fractions"]) - FRACTIONS).max())
        rec["held_out"].append({"seed": s, "single": one, "mixed": three,
                                "gain": round(gain, 3), "fraction_error": round(frac, 4)})
        print(json.dumps(rec["held_out"][-1]), flush=True)
    commit = (info.get("git") or {}).get("commit", "unknown")[:7]
    write_json(a.out / f"rnf-{a.option.replace('_', '-')}-{commit}.json", rec)
    return rec


if __name__ == "__main__":
    main()
