"""Issue #5 on measured data: the pipeline end to end with the RNF engine on the tike hard
X-ray Siemens star (``../shared/data/farfield-xray-siemens-star``), with a half-data FRC.

The run is the deployment's configuration (``deployments/configs/farfield-siemens.yaml``:
2 x 2 tiles on 2 Dask workers, the file's probe) with ``engine: rnf`` and
``evaluation.half_data``: every tile is reconstructed from all its frames and from two
interleaved halves, the halves are stitched into two mosaics and their FRC gives the
resolution. The number goes to the ``metrics`` step of the store, the run's ``metrics``
artifact and ``bench/results/pipeline-rnf-star.json``.

Settings (``SETTINGS``): the configuration unchanged (40 epochs, the file's probe, probe
learned), only ``engine: rnf`` with RNF's own defaults and ``evaluation.half_data``; the
control is the same configuration with its own engine, rPIE. No per-test settings (issue
#19: one default configuration). Measured with ``ptyflow run`` at 2b35fca / 870a8c5 (halves
split over the whole scan): RNF 0.263 c/px (full set 569 s, halves 578 s), rPIE 0.174.
Takes ~25 min on two CPU cores; skips without the data; slow.

Earlier this test learned 4 RNF epochs (64-frame batches) on a 10-iteration rPIE object
prior; with the rPIE-only control beside it, RNF did not add resolution to that prior
(0.161 vs 0.177), so it measured the prior, not the engine.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.filterwarnings("ignore"),
]

REPO = Path(__file__).resolve().parents[2]
FILE = "farfield-xray-siemens-star/siemens-star-small.npz.bz2"
CONFIG = REPO / "deployments" / "configs" / "farfield-siemens.yaml"
RESULT = REPO / "bench" / "results" / "pipeline-rnf-star.json"
SETTINGS = {"engine": {"engine": "rnf"}, "evaluation": {"half_data": True}}


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _artifact_rows(key: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        arts = client.read_artifacts(artifact_filter=flt)
    assert arts, f"no {key!r} artifact"
    data = arts[0].data
    return json.loads(data) if isinstance(data, str) else data


def test_star_rnf_pipeline_reports_half_data_frc(harness, data_dir, tmp_path):
    from bench._machine import machine_info
    from flows.params import PipelineParams
    from flows.pipeline import pipeline
    from storage.store import RunStore

    path = data_dir / FILE
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    store = tmp_path / "star.zarr"
    params = PipelineParams.from_yaml(CONFIG, input=str(path), store=str(store), **SETTINGS)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    out = pipeline(params)
    seconds = time.perf_counter() - t0

    refs = out["tiles"]
    assert len(refs) == 3 * 4 and {r["half"] for r in refs} == {"", "a", "b"}
    s = RunStore(store, "r")
    assert all(s.root[r["step"]].attrs["engine"] == "rnf" for r in refs)
    assert {"mosaic", "mosaic_a", "mosaic_b", "metrics"} <= set(s.completed_steps())
    res = out["metrics"]["halfdata_frc_resolution"]  # cycles per pixel
    assert s.root["metrics"].attrs["values"]["halfdata_frc_resolution"] == res
    rows = {r["metric"]: float(r["value"]) for r in _artifact_rows("metrics")}
    assert math.isclose(rows["halfdata_frc_resolution"], res, rel_tol=1e-5)
    # The control: the same configuration and epochs with rPIE, the config's own engine.
    ctrl_store = tmp_path / "star-rpie.zarr"
    ctrl_settings = {**SETTINGS, "engine": {"engine": "rpie"}}
    ctrl = pipeline(PipelineParams.from_yaml(CONFIG, input=str(path), store=str(ctrl_store),
                                             **ctrl_settings))  # fmt: skip
    res_rpie = ctrl["metrics"]["halfdata_frc_resolution"]
    print(f"half-data FRC (standard first crossing): RNF {res:.4f}, rPIE control "
          f"{res_rpie:.4f} cycles/px")  # fmt: skip
    assert res > res_rpie, (res, res_rpie)
    assert res < 0.5, res  # a crossing below Nyquist

    result = {
        "suite": "pipeline-rnf-star",
        "machine": machine_info(),
        "load_average_start": list(load0),
        "load_average_end": list(os.getloadavg()),
        "dataset": FILE,
        "config": str(CONFIG.relative_to(REPO)),
        "settings": SETTINGS,
        "seconds": seconds,
        "tile_seconds": {r["step"]: float(s.root[r["step"]].attrs["seconds"]) for r in refs},
        "halfdata_frc_resolution_cycles_per_px": res,
        "rpie_control_halfdata_frc_resolution_cycles_per_px": res_rpie,
        "halfdata_frc_period_px": 1 / res,
        "metrics": out["metrics"],
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nstar, RNF ({params.engine.epochs} epochs): half-data FRC resolution "
          f"{res:.4f} cycles/px (period {1 / res:.1f} px), pipeline {seconds:.0f} s; "
          f"recorded in {RESULT}")  # fmt: skip
