"""RNF from its defaults on the measured FPM blood smear, green (issue #19): the pipeline
with nothing but the reader's geometry and ``--half-data``, i.e. ``ptyflow run
bloodsmear_green.mat --half-data``.

Half-data FRC, standard first half-bit crossing, searched up to the band both LED halves
measured (0.330 cycles per 0.461 um pixel; ``ptytasks.evaluation.half_data_frc``), halves
from the checkerboard LED split with their own seeds, over the trusted region: the camera
field less its guard band (4 camera pixels, where the periodic model wraps round:
``ptytasks.tiling.Tile.guard``; ``docs/rnf.md``). Floor: the issue's 0.30 (PtyLab qNewton
0.292), and at least the same pipeline with ``engine: rpie`` (the control).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.flows.halfdata import half_data_run

pytestmark = [pytest.mark.realdata, pytest.mark.slow, pytest.mark.timeout(2400),
              pytest.mark.filterwarnings("ignore")]  # fmt: skip

REPO = Path(__file__).resolve().parents[2]
RESULT = REPO / "bench" / "results" / "pipeline-rnf-blood.json"
BLOOD = "fpm-bloodsmear/bloodsmear_green.mat"
FLOOR = 0.30  # cycles per pixel (issue #19)


def test_blood_smear_rnf_defaults_half_data_frc(data_dir, tmp_path):
    path = data_dir / BLOOD
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    from bench._machine import machine_info

    load0 = os.getloadavg()
    rnf = half_data_run(path, tmp_path / "rnf.zarr")
    rpie = half_data_run(path, tmp_path / "rpie.zarr", engine={"engine": "rpie"})
    print(f"blood smear half-data FRC (first half-bit crossing): RNF defaults "
          f"{rnf['frc']:.3f} cycles/px in {rnf['seconds']:.0f} s; rPIE {rpie['frc']:.3f} in "
          f"{rpie['seconds']:.0f} s")  # fmt: skip
    RESULT.write_text(json.dumps({
        "suite": "pipeline-rnf-blood", "machine": machine_info(), "dataset": BLOOD,
        "load_average_start": list(load0), "load_average_end": list(os.getloadavg()),
        "settings": {"rnf": {}, "rpie": {"engine": {"engine": "rpie"}},
                     "evaluation": {"half_data": True}, "stages": "in process, serial"},
        "halfdata_frc_resolution_cycles_per_px": {"rnf": rnf["frc"], "rpie": rpie["frc"]},
        "seconds": {"rnf": rnf["seconds"], "rpie": rpie["seconds"]},
    }, indent=1, default=float) + "\n")  # fmt: skip
    assert rnf["frc"] >= FLOOR, rnf
    assert rnf["frc"] >= rpie["frc"], (rnf, rpie)
    assert rnf["seconds"] < 15 * 60, rnf
