"""The gigapixel-coded flow: coded data only, and resumable -- tiles already in the run
store (an interrupted batch) are reused, the rest reconstructed."""

from __future__ import annotations

import pytest

from flows.gigapixel import GigapixelParams, gigapixel_coded, resume_state
from flows.params import ConfigError
from tests.deploy.helpers import tiny_farfield, tiny_params, using_api

pytestmark = pytest.mark.timeout(900)


def test_defaults_target_many_tiles_on_gpu_workers():
    p = GigapixelParams(input="c.h5", store="c.zarr")
    assert p.tiling.grid == (8, 8) and p.cluster.kind == "local_cuda"
    assert p.engine.engine == "rnf"
    assert resume_state("/nonexistent.zarr") == {"planned": 0, "done": 0}


def test_rejects_data_that_is_not_coded(prefect_server, tmp_path):
    data = tiny_farfield(tmp_path / "ff.cxi")
    params = GigapixelParams(**tiny_params(data, tmp_path / "ff.zarr"))
    with using_api(prefect_server["url"]), pytest.raises(ConfigError, match="needs coded"):
        gigapixel_coded(params)
    from storage.store import RunStore  # refused from the file's header, before ingest

    assert not (tmp_path / "ff.zarr").exists() or not RunStore(tmp_path / "ff.zarr").exists("raw")


@pytest.mark.slow  # two RNF tiles under a Prefect server
def test_resumes_an_interrupted_batch(prefect_server, tmp_path):
    from flows import stages
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    write_cxi(tmp_path / "coded.cxi", simulate("coded", seed=1, frame_size=32, n_positions=16))
    params = GigapixelParams(**tiny_params(
        tmp_path / "coded.cxi", tmp_path / "coded.zarr", tiling={"grid": [2, 1]},
        engine={"engine": "rnf", "epochs": 2}))  # fmt: skip
    # "Interrupted" batch: the first tile finished before the run stopped.
    stages.ingest(params.input, params.store, params.ingest)
    stages.subsample(params.store, params.subsample)
    stages.calibrate(params.store, params.calibration)
    tiles = stages.plan(params.store, params.tiling)
    stages.reconstruct_tile(params.store, tiles[0], params.engine, params.calibration)
    assert resume_state(params.store) == {"planned": 2, "done": 1}
    with using_api(prefect_server["url"]):
        result = gigapixel_coded(params)
    assert result["reused_tiles"] == 1 and len(result["tiles"]) == 2
    assert resume_state(params.store) == {"planned": 2, "done": 2}
    assert "truth_phase_ssim" in result["metrics"]
