"""A tile's epochs reach the command line's progress bar through a file beside the store."""

from __future__ import annotations

import pytest

from flows import stages
from flows.params import PipelineParams
from flows.runner import store_progress


@pytest.mark.parametrize("engine", ["rpie", pytest.param("rnf", marks=pytest.mark.slow)])
def test_epochs_of_a_running_tile_move_the_progress(tmp_path, engine):
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    cxi = tmp_path / "scan.cxi"
    write_cxi(cxi, simulate("farfield", frame_size=16, n_positions=9, known_probe=True))
    store = str(tmp_path / "run.zarr")
    p = PipelineParams.from_mapping({"input": str(cxi), "store": store,
                                     "engine": {"engine": engine, "epochs": 3}})  # fmt: skip
    stages.ingest(str(cxi), store, p.ingest)
    stages.subsample(store, p.subsample)
    stages.calibrate(store, p.calibration)
    (tile,) = stages.plan(store, p.tiling)
    before, total = store_progress(store)
    assert before == 4 and total == 7  # raw, subsample, priors, tiling; tile, mosaic, metrics
    seen = []

    def progress(epoch, info):
        f = stages.epoch_progress_path(store, stages.tile_step(tile["tile_id"]))
        seen.append((f.read_text(), store_progress(store)[0]))

    stages.reconstruct_tile(store, tile, p.engine, p.calibration, progress=progress)
    assert [s for s, _ in seen] == ["1 3", "2 3", "3 3"]
    done = [d for _, d in seen]
    assert before < done[0] < done[1] < done[2] < before + 1
    assert store_progress(store)[0] == before + 1  # stored: a whole step, the file is gone
    assert not stages.epoch_progress_path(store, stages.tile_step(tile["tile_id"])).exists()
