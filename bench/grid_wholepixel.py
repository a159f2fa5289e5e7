"""Control of the grid's far-field cell ff-100-1e6 with whole-pixel scan corners.

ptyflow's simulator writes frames with ptyflow's own sub-pixel model (the object patch is
Fourier-shifted by the corner's fraction); pty-chi and PtyRAD shift the probe instead. On the
grid's fractional corners a peer therefore fits a model that differs from the one that made
the data (pty-chi: 3 % frame misfit at the truth), while ptyflow's engines do not. Here the
same test cases are re-simulated with the corners rounded to whole pixels, where both
conventions are exact, and the engines run with the grid's frozen settings from the same
blind probe. Writes ``bench/results/grid-wholepixel-<device>.json`` (provenance as the grid).

    python -m bench.grid_wholepixel [--engines rpie ptychi-rpie ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from bench import grid_cells as G
from bench import suite_common as C
from bench import suite_grid as S

CELL = "ff-100-1e6"
ENGINES = ("rpie", "ptychi-rpie", "epie", "ptychi-lsqml", "ptyrad", "rnf")


def whole_pixel_case(seed: int, object_kind: str):
    """The grid's case with corners rounded and the frames re-simulated (same dose)."""
    from ptytasks.physics.models.farfield import FarField
    from ptytasks.simulate import _common as SC

    cell = G.cell(CELL)
    data, _ = G.simulate_case(cell, seed, object_kind)
    gt = dict(data.ground_truth)
    pos = np.round(np.asarray(gt["positions_px"], np.float64))
    model = FarField(torch.as_tensor(pos), data.object_shape, data.frame_shape)
    clean = SC.forward(model, np.asarray(gt["object"]), np.asarray(gt["probe"]))
    frames = SC.detect(clean, cell.dose, seed + 500)
    gt["positions_px"] = pos
    return dataclasses.replace(data, frames=frames, positions_px=pos, ground_truth=gt)


def main(argv=None) -> int:
    from bench._machine import git_state

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="*", default=list(ENGINES))
    ap.add_argument("--settings-file", default=str(S.SETTINGS_FILE))
    a = ap.parse_args(argv)
    frozen = S.frozen_settings(a.settings_file)["settings"]["farfield"]
    args = argparse.Namespace(device="cpu", quick=False, threads=1, no_peers=False)
    doc = {**C.run_header("grid-wholepixel", args), "code": git_state(), "cell": CELL,
           "settings": {e: frozen[e] for e in a.engines}, "test_cases": G.TEST_CASES,
           "epochs": G.EPOCHS["farfield"], "rows": []}  # fmt: skip
    path = C.RESULTS / "grid-wholepixel-cpu.json"
    t0 = time.perf_counter()
    for seed, kind in G.TEST_CASES:
        data = whole_pixel_case(seed, kind)
        truth, mask, probe = data.ground_truth["object"], C.illuminated(data), G.start_probe(data)
        for e in a.engines:
            C.log(f"whole-pixel {CELL} seed {seed} {e}")
            row = G.run_case_engine(data, truth, mask, probe, e, frozen[e],
                                    G.EPOCHS["farfield"], seed=seed)  # fmt: skip
            row.update({"seed": seed, "object_kind": kind})
            doc["rows"].append(row)
            C.log(f"  -> {row.get('complex_error', float('nan')):.4f}")
            C.write_json(path, {**doc, "partial": True})
    doc["median_error"] = {e: float(np.median([r["complex_error"] for r in doc["rows"]
                                               if r["engine"] == e])) for e in a.engines}
    doc["seconds"] = time.perf_counter() - t0
    C.write_json(path, {**doc, "partial": False})
    print(json.dumps(doc["median_error"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
