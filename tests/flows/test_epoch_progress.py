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


def test_a_rerun_under_changed_settings_does_not_start_full(tmp_path):
    """After a parameter change every tile is recomputed: their old markers are not
    progress (the bar read 100 % from the start, 8 of 8), nor are the mosaic and metrics
    over them; under the settings they were made with they are."""
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    cxi = str(write_cxi(tmp_path / "scan.cxi", simulate("farfield", frame_size=16,
                                                        n_positions=9, known_probe=True)))
    store = str(tmp_path / "run.zarr")
    first = PipelineParams.from_mapping({"input": cxi, "store": store,
                                         "engine": {"engine": "epie", "epochs": 1}})
    stages.ingest(cxi, store, first.ingest)
    stages.subsample(store, first.subsample)
    stages.calibrate(store, first.calibration)
    tiles = stages.plan(store, first.tiling)
    for t in tiles:
        stages.reconstruct_tile(store, t, first.engine, first.calibration)
    stages.stitch(store, tiles)
    stages.evaluate(store, first.evaluation)
    assert store_progress(store, ("",), first) == (7, 7)
    second = first.model_copy(update={"engine": first.engine.model_copy(update={"epochs": 3})})
    assert store_progress(store, ("",), second) == (4, 7)  # the fixed steps only
    from flows.gigapixel import resume_state  # its resume count, likewise

    assert resume_state(store, ("",), first)["done"] == 1
    assert resume_state(store, ("",), second)["done"] == 0
