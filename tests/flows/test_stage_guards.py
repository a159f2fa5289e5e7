"""What the stages refuse or leave out: halves an earlier run left in the store (made
under other settings) are not reported; a tile grid the data cannot take names the
setting to change."""

from __future__ import annotations

from flows import stages
from flows.params import PipelineParams
from ptytasks.simulate import simulate
from storage.cxi import write_cxi


def _run(p: PipelineParams, halves: list[str]) -> dict:
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    stages.calibrate(p.store, p.calibration)
    tiles = stages.plan(p.store, p.tiling)
    for h in halves:
        for t in tiles:
            stages.reconstruct_tile(p.store, t, p.engine, p.calibration, half=h)
        stages.stitch(p.store, tiles, half=h)
    return stages.evaluate(p.store, p.evaluation)


def test_halves_of_an_earlier_run_are_not_reported(tmp_path):
    data = simulate("farfield", frame_size=32, n_positions=16, seed=0)
    cxi = str(write_cxi(tmp_path / "ff.cxi", data))
    store = str(tmp_path / "r.zarr")
    first = PipelineParams.from_mapping({"input": cxi, "store": store,
                                         "engine": {"engine": "epie", "epochs": 2},
                                         "evaluation": {"half_data": True}})  # fmt: skip
    m1 = _run(first, ["", "a", "b"])
    assert "halfdata_frc_resolution" in m1
    second = PipelineParams.from_mapping({"input": cxi, "store": store,
                                          "engine": {"engine": "epie", "epochs": 3},
                                          "evaluation": {"half_data": False}})  # fmt: skip
    m2 = _run(second, [""])
    assert not any(k.startswith("halfdata") for k in m2), sorted(m2)


def test_a_tile_left_without_frames_in_one_half_names_the_setting(tmp_path):
    """A fine grid on a sparse scan leaves tiles of one or two frames; the half that gets
    none is refused naming what to change (it was a ZeroDivisionError inside the engine)."""
    import pytest

    from flows.params import ConfigError

    data = simulate("farfield", frame_size=32, n_positions=16, seed=0)
    p = PipelineParams.from_mapping({"input": str(write_cxi(tmp_path / "ff.cxi", data)),
                                     "store": str(tmp_path / "r.zarr"),
                                     "engine": {"engine": "epie", "epochs": 1},
                                     "tiling": {"grid": [4, 4], "margin": 0},
                                     "evaluation": {"half_data": True}})  # fmt: skip
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    stages.calibrate(p.store, p.calibration)
    tiles = stages.plan(p.store, p.tiling)
    assert min(len(t["frame_indices"]) for t in tiles) == 1
    with pytest.raises(ConfigError, match="tiling.grid"):
        for t in tiles:
            for h in ("a", "b"):
                stages.reconstruct_tile(p.store, t, p.engine, p.calibration, half=h)


def test_a_fourier_grid_finer_than_the_frames_names_the_grid(tmp_path):
    import pytest

    from flows.params import ConfigError

    data = simulate("fourier", image_size=16, seed=0)
    p = PipelineParams.from_mapping({"input": str(write_cxi(tmp_path / "fp.cxi", data)),
                                     "store": str(tmp_path / "r.zarr"),
                                     "tiling": {"grid": [20, 20]}})  # fmt: skip
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    with pytest.raises(ConfigError, match=r"grid \[20, 20\].*empty crops"):
        stages.plan(p.store, p.tiling)


def test_calibration_settings_the_data_cannot_take_name_their_field(tmp_path):
    """A surface reference of another detector (its top-left crop was used, silently) or of
    another modality (KeyError 'surface_distance'), and a physical probe without the beam's
    parameters (a bare ValueError, retried, exit 1), name the file or the field."""
    import pytest

    from flows.params import ConfigError
    from storage.errors import DataError

    coded = str(write_cxi(tmp_path / "c.cxi", simulate("coded", frame_size=32, n_positions=6,
                                                       overlap=0.9, seed=0)))
    refs = {"big": simulate("coded", frame_size=48, n_positions=6, overlap=0.9, seed=1),
            "far": simulate("farfield", frame_size=32, n_positions=9, seed=1)}
    for name, ref in refs.items():
        path = str(write_cxi(tmp_path / f"{name}.cxi", ref))
        p = PipelineParams.from_mapping({"input": coded, "store": str(tmp_path / f"{name}.zarr"),
                                         "calibration": {"surface_reference": path}})
        stages.ingest(p.input, p.store, p.ingest)
        stages.subsample(p.store, p.subsample)
        with pytest.raises(DataError, match=rf"{name}.cxi \[frames\]"):
            stages.calibrate(p.store, p.calibration)
    far = str(write_cxi(tmp_path / "f.cxi", refs["far"]))
    p = PipelineParams.from_mapping({"input": far, "store": str(tmp_path / "p.zarr"),
                                     "calibration": {"probe": "physical"}})
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    with pytest.raises(ConfigError, match="calibration.probe"):
        stages.calibrate(p.store, p.calibration)


def test_the_exported_probe_of_coded_tiles_is_the_whole_illumination(tmp_path):
    """Coded tiles each hold a crop of the detector: the export wrote one tile's crop
    (20 x 32 of a 32 x 32 detector) as the probe; it is the frame-shaped illumination."""
    from flows.export import best_probe

    d = simulate("coded", frame_size=32, n_positions=6, overlap=0.9, seed=0)
    p = PipelineParams.from_mapping({"input": str(write_cxi(tmp_path / "c.cxi", d)),
                                     "store": str(tmp_path / "c.zarr"),
                                     "engine": {"engine": "epie", "epochs": 1},
                                     "tiling": {"grid": [2, 1], "margin": 4}})  # fmt: skip
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    stages.calibrate(p.store, p.calibration)
    tiles = stages.plan(p.store, p.tiling)
    assert all(t["frame_crop"] is not None for t in tiles)
    for t in tiles:
        stages.reconstruct_tile(p.store, t, p.engine, p.calibration)
    assert best_probe(stages._store(p.store)).shape[-2:] == d.frame_shape


def test_the_calibration_step_refuses_a_file_the_modality_does_not_read(tmp_path):
    """The flow's own check (a run from the UI goes through no other): a pupil_file with
    far-field data was ignored without a word."""
    import pytest

    from flows.params import ConfigError

    data = simulate("farfield", frame_size=32, n_positions=9, seed=0)
    p = PipelineParams.from_mapping({"input": str(write_cxi(tmp_path / "ff.cxi", data)),
                                     "store": str(tmp_path / "r.zarr"),
                                     "calibration": {"pupil_file": "pupil.npy"}})  # fmt: skip
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    with pytest.raises(ConfigError, match="calibration.pupil_file: not used by farfield data"):
        stages.calibrate(p.store, p.calibration)
