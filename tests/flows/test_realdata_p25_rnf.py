"""RNF from its defaults on the measured P25 near-field set (issue #19): the pipeline with
nothing but the reader's geometry (``ingest.z1``, the focus-to-sample distance the file
does not store) and ``--half-data``, i.e. ``ptyflow run P25.cxi --z1 3.65e-3 --half-data``.

Half-data FRC, standard first half-bit crossing, halves run with their own seeds. Floor:
the issue's 0.31 cycles/px (pty-chi LSQML, 50 epochs: 0.304), and at least the same
pipeline with ``engine: rpie`` (the control, same defaults otherwise).

Measured at the engine level (the same interleaved halves, 50 epochs, seeds 100 / 101):
RNF 0.462 cycles/px in 161 s for both halves; rPIE (30 or 150 iterations) 0.027: its halves
disagree at low spatial frequencies (+-0.3 rad blobs tens of pixels wide, where the
near-field phase transfer sin(pi lambda z f^2) is a few per cent), so its curve, above
half-bit from 0.04 to 0.40 cycles/px, first crosses at the third ring. Pipeline figures:
``docs/rnf.md``.
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
RESULT = REPO / "bench" / "results" / "pipeline-rnf-p25.json"
P25 = "nearfield-xray-p25/PETRAIII_P25_Near_Field_Ptycho.cxi"
GEOMETRY = {"ingest": {"z1": 3.65e-3}}
FLOOR = 0.31  # cycles per pixel (issue #19)


def test_p25_rnf_defaults_half_data_frc(data_dir, tmp_path):
    path = data_dir / P25
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    from bench._machine import machine_info

    load0 = os.getloadavg()
    rnf = half_data_run(path, tmp_path / "rnf.zarr", **GEOMETRY)
    rpie = half_data_run(path, tmp_path / "rpie.zarr", engine={"engine": "rpie"}, **GEOMETRY)
    print(f"P25 half-data FRC (first half-bit crossing): RNF defaults {rnf['frc']:.3f} "
          f"cycles/px in {rnf['seconds']:.0f} s; rPIE {rpie['frc']:.3f} in "
          f"{rpie['seconds']:.0f} s")  # fmt: skip
    RESULT.write_text(json.dumps({
        "suite": "pipeline-rnf-p25", "machine": machine_info(), "dataset": P25,
        "load_average_start": list(load0), "load_average_end": list(os.getloadavg()),
        "settings": {"rnf": GEOMETRY, "rpie": {**GEOMETRY, "engine": {"engine": "rpie"}},
                     "evaluation": {"half_data": True}, "stages": "in process, serial"},
        "halfdata_frc_resolution_cycles_per_px": {"rnf": rnf["frc"], "rpie": rpie["frc"]},
        "seconds": {"rnf": rnf["seconds"], "rpie": rpie["seconds"]},
    }, indent=1, default=float) + "\n")  # fmt: skip
    assert rnf["frc"] >= FLOOR, rnf
    assert rnf["frc"] >= rpie["frc"], (rnf, rpie)
    assert rnf["seconds"] < 15 * 60, rnf
