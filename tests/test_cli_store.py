"""``ptyflow ingest | show | export`` on a run store built by the plain stage functions
(no Prefect), and the export's mapping of refined tile positions to global pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.params import PipelineParams
from tests.stage_runner import run_stages

runner = CliRunner()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2x2-tile rPIE run of a small simulated far-field dataset."""
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    d = tmp_path_factory.mktemp("run")
    write_cxi(d / "ff.cxi", simulate("farfield", seed=2, frame_size=32, n_positions=40,
                                     known_probe=True))  # fmt: skip
    p = PipelineParams.from_mapping({
        "input": str(d / "ff.cxi"), "store": str(d / "ff.zarr"), "tiling": {"grid": [2, 2]},
        "engine": {"engine": "rpie", "epochs": 3, "learn_probe": False},
        "cluster": {"kind": "none"}})  # fmt: skip
    run_stages(p)
    return p


def test_ingest_command(tmp_path, finished):
    out = tmp_path / "i.zarr"
    res = runner.invoke(app, ["ingest", finished.input, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "ingested 40 farfield frames" in res.output
    bad = tmp_path / "bad.cxi"
    bad.write_bytes(b"garbage" * 50)
    res = runner.invoke(app, ["ingest", str(bad), "--out", str(tmp_path / "b.zarr")])
    assert res.exit_code == 2 and "error:" in res.output
    res = runner.invoke(app, ["ingest", finished.input, "--out", str(out), "--option", "x"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    res = runner.invoke(app, ["ingest", finished.input, "--out", str(out), "--option",
                              "step=[1"])  # a YAML traceback, exit 1, before
    assert res.exit_code == 2 and "not YAML" in " ".join(res.output.split()), res.output


def test_show_summarises_the_store(finished):
    res = runner.invoke(app, ["show", finished.store])
    assert res.exit_code == 0, res.output
    for text in ("farfield", "40 frames", "t0000", "mosaic", "truth_phase_ssim", "metrics"):
        assert text in res.output
    res = runner.invoke(app, ["show", finished.store, "--json"])
    s = json.loads(res.output)
    assert s["data"]["frames"] == 40 and len(s["tiles"]) == 4
    assert all(t["done"] and t["engine"] == "rpie" for t in s["tiles"])
    assert "metrics" in s["steps"] and s["metrics"]["trusted_pixels"] > 0
    res = runner.invoke(app, ["show", finished.store + ".nope"])
    assert res.exit_code == 2 and "not a run store" in res.output


def test_export_writes_plain_arrays(tmp_path, finished):
    from storage.store import RunStore

    out = tmp_path / "r.npz"
    res = runner.invoke(app, ["export", finished.store, str(out)])
    assert res.exit_code == 0, res.output
    z = np.load(out, allow_pickle=False)
    s = RunStore(finished.store, "r")
    mosaic = s.read_array("mosaic/level_0/object")
    assert z["object"].dtype == np.complex64 and np.array_equal(z["object"], mosaic)
    assert z["probe"].shape == (32, 32) and z["probe"].dtype == np.complex64
    assert z["nominal"].size == 0  # the simulated file gives its geometry
    # No position refinement: every frame maps back exactly to its nominal position.
    nominal = s.read_array("raw/positions")
    assert z["positions"].shape == (40, 2)
    np.testing.assert_allclose(z["positions"], nominal[z["frames"]], atol=1e-9)
    res = runner.invoke(app, ["export", finished.store, str(out)])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["export", finished.store, str(tmp_path / "r.txt")])
    assert res.exit_code == 2 and ".npz" in res.output
    res = runner.invoke(app, ["export", finished.store, str(tmp_path / "nodir" / "r.npz")])
    text = "".join(res.output.replace("│", " ").split())  # Rich's box wraps mid-word
    assert res.exit_code == 2 and "nodirdoesnotexist" in text, res.output


def test_export_refuses_a_store_a_run_is_writing(tmp_path, finished):
    """A run re-entering the store rewrites the mosaic, probe and positions: an export
    streaming them meanwhile would mix two runs. Export holds the store's lock, so it is
    refused (exit 2, naming the run) while a run holds it, and works once it is free."""
    from storage.lock import holder
    from tests.lock_holder import lock_held_elsewhere

    out = tmp_path / "r.npz"
    with lock_held_elsewhere(finished.store, "ptyflow run other") as proc:
        res = runner.invoke(app, ["export", finished.store, str(out)])
        text = " ".join(res.output.replace("│", " ").split())
        assert res.exit_code == 2 and "locked by another run" in text, res.output
        assert f"pid {proc.pid}" in text and not out.exists()
    res = runner.invoke(app, ["export", finished.store, str(out)])
    assert res.exit_code == 0 and out.exists(), res.output
    assert holder(finished.store) is None  # and the export gave the lock back


def test_export_maps_refined_tile_positions_to_global(tmp_path, finished):
    """A tile's refined (local) positions reach the export shifted by its canvas origin,
    for the frames whose probe centre lies in that tile's core."""
    import shutil

    import zarr

    from flows.export import final_positions
    from storage.store import RunStore

    store = tmp_path / "moved.zarr"
    shutil.copytree(finished.store, store)
    s = RunStore(store, "r")
    tiles = s.root["tiling"].attrs["tiles"]
    t = max(tiles, key=lambda t: len(t["frame_indices"]))
    arr = zarr.open_array(str(store), path=f"reconstruct/{t['tile_id']}/positions", mode="r+")
    arr[...] = arr[...] + np.array([0.25, -0.5])  # as if the engine had refined them
    before, frames = final_positions(RunStore(finished.store, "r"))
    after, _ = final_positions(RunStore(store, "r"))
    moved = np.flatnonzero(np.any(after != before, axis=1))
    assert moved.size > 0 and set(moved) <= set(t["frame_indices"])
    np.testing.assert_allclose(after[moved] - before[moved], [[0.25, -0.5]] * moved.size)
    # every kept frame is owned by exactly one tile's core
    owned = np.zeros(len(frames), int)
    half = np.array([16.0, 16.0])
    for tt in tiles:
        c = before[tt["frame_indices"]] + half
        y0, y1, x0, x1 = tt["core"]
        owned[
            np.asarray(tt["frame_indices"])[
                (c[:, 0] >= y0) & (c[:, 0] < y1) & (c[:, 1] >= x0) & (c[:, 1] < x1)
            ]
        ] += 1
    assert np.all(owned == 1)


def test_placeholder_geometry_is_marked_in_show_and_export(tmp_path):
    """An NPZ without wavelength or pixel size ingests with placeholders (meta["nominal"]);
    show printed them, and export wrote them, as if measured."""
    from flows.export import _nominal
    from storage.store import RunStore

    frames = np.random.default_rng(0).poisson(5, (4, 16, 16)).astype(np.float32)
    src = tmp_path / "d.npz"
    np.savez(src, frames=frames, positions=np.array([[0, 0], [0, 4], [4, 0], [4, 4]], float))
    store = tmp_path / "r.zarr"
    assert runner.invoke(app, ["ingest", str(src), "-o", str(store)]).exit_code == 0
    res = runner.invoke(app, ["show", str(store)])
    text = " ".join(res.output.replace("│", " ").split())
    assert text.count("(nominal: not in the file)") == 2, res.output
    assert _nominal(RunStore(store, "r").root["raw"]) == ["wavelength", "pixel_size"]
