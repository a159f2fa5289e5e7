"""The pipeline flow under a Prefect test server with a 2-worker local Dask cluster."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

from flows.params import PipelineParams
from ptytasks.evaluation import trusted_mask
from ptytasks.metrics.align import align
from ptytasks.tiling import Tile
from storage.errors import DataError
from storage.store import RunStore

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def farfield_cxi(tmp_path_factory):
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    path = tmp_path_factory.mktemp("data") / "farfield.cxi"
    write_cxi(path, simulate("farfield", seed=1, n_positions=196, known_probe=True))
    return path


def _params(cxi, store, **over) -> PipelineParams:
    raw = {
        "input": str(cxi),
        "store": str(store),
        "tiling": {"grid": [2, 2]},
        "engine": {"engine": "rpie", "epochs": 40, "learn_probe": False},
        "cluster": {"kind": "local", "n_workers": 2, "torch_threads": 1},
    }
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v}
    return PipelineParams.from_mapping(raw)


def _probe_width(probe: np.ndarray) -> int:
    """Probe footprint diameter: twice the RMS radius of its intensity, pixels."""
    i = np.abs(probe) ** 2
    yy, xx = np.indices(i.shape)
    cy, cx = (i * yy).sum() / i.sum(), (i * xx).sum() / i.sum()
    return int(np.ceil(2 * np.sqrt((i * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / i.sum())))


def _seam_vs_interior(store_path) -> tuple[float, float, float]:
    """Aligned error: overall, within one probe width of the tile seams, and elsewhere."""
    s = RunStore(store_path, "r")
    mosaic = s.read_array("mosaic/level_0/object")
    weight = s.read_array("mosaic/level_0/weight")
    truth = s.read_array("raw/truth/object")[: mosaic.shape[0], : mosaic.shape[1]]
    width = _probe_width(s.read_array("priors/probe"))
    mask = trusted_mask(weight, 0.3)
    aligned, _ = align(mosaic, truth, mask, shift=False)
    err = np.abs(aligned - truth) ** 2
    seam = np.zeros(mask.shape, bool)
    for t in (Tile.from_dict(d) for d in s.root["tiling"].attrs["tiles"]):
        y0, y1, x0, x1 = t.core
        for y in (y0, y1):
            if 0 < y < mask.shape[0] - 1:
                seam[max(0, y - width // 2) : y + width // 2, x0:x1] = True
        for x in (x0, x1):
            if 0 < x < mask.shape[1] - 1:
                seam[y0:y1, max(0, x - width // 2) : x + width // 2] = True
    ref = np.abs(truth) ** 2
    rel = lambda m: float(np.sqrt(err[m].sum() / ref[m].sum()))  # noqa: E731
    return rel(mask), rel(mask & seam), rel(mask & ~seam)


def _tile_keys(store_path) -> dict:
    s = RunStore(store_path, "r")
    return {k: m["key"] + m["completed_at"] for k, m in s.completed_steps().items()
            if k.startswith("reconstruct/")}  # fmt: skip


def test_pipeline_four_tiles_two_workers_and_rerun(harness, farfield_cxi, tmp_path):
    from flows.pipeline import pipeline

    store = tmp_path / "run.zarr"
    out = pipeline(_params(farfield_cxi, store))
    refs = out["tiles"]
    assert len(refs) == 4 and not any(r["skipped"] for r in refs)
    # Every tile ran on a Dask worker holding its single GPU resource slot.
    assert len({r["worker"] for r in refs}) == 2
    assert all(r["gpu_free"] == 0 for r in refs)
    total, seam, interior = _seam_vs_interior(store)
    assert out["metrics"]["truth_complex_error"] < 0.15
    assert total < 0.15
    assert seam <= 1.5 * interior, (seam, interior)
    assert (tmp_path / "run_amplitude.png").is_file() and (tmp_path / "run_phase.png").is_file()

    # Same parameters again: no tile recomputed (states and store markers agree).
    before = _tile_keys(store)
    again = pipeline(_params(farfield_cxi, store))
    assert all(r["skipped"] for r in again["tiles"])
    assert _tile_keys(store) == before
    metrics_marker = RunStore(store, "r").marker("metrics")["completed_at"]

    # Only the evaluation changed: tiles and mosaic are reused, metrics recomputed.
    mosaic_marker = RunStore(store, "r").marker("mosaic")["completed_at"]
    third = pipeline(_params(farfield_cxi, store, evaluation={"threshold": "1/7"}))
    assert all(r["skipped"] for r in third["tiles"])
    assert _tile_keys(store) == before
    s = RunStore(store, "r")
    assert s.marker("mosaic")["completed_at"] == mosaic_marker
    assert s.marker("metrics")["completed_at"] != metrics_marker


def _worker_processes() -> list[psutil.Process]:
    kids = psutil.Process().children(recursive=True)
    return [p for p in kids if "spawn_main" in " ".join(p.cmdline())]


@pytest.mark.slow  # ~100 s: two full pipeline runs; run with -m slow
def test_killed_worker_still_completes_with_same_mosaic(harness, farfield_cxi, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from flows.pipeline import pipeline

    calm = tmp_path / "calm.zarr"
    pipeline(_params(farfield_cxi, calm, engine={"epochs": 60}))

    killed: list[int] = []

    def killer():
        deadline = time.time() + 300
        with get_client(sync_client=True) as client:
            while time.time() < deadline and not killed:
                runs = client.read_task_runs(
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="reconstruct-t"))
                )
                running = [r for r in runs if r.state and r.state.is_running()
                           and r.start_time and r.start_time.timestamp() > t_start]  # fmt: skip
                # Only a worker that has been up a while is computing a tile (not starting).
                procs = [p for p in _worker_processes() if time.time() - p.create_time() > 4]
                if running and procs:
                    time.sleep(1.0)
                    procs[0].kill()
                    killed.append(procs[0].pid)
                time.sleep(0.3)

    stormy = tmp_path / "stormy.zarr"
    t_start = time.time()
    th = threading.Thread(target=killer, daemon=True)
    th.start()
    out = pipeline(_params(farfield_cxi, stormy, engine={"epochs": 60}))
    th.join(timeout=5)
    assert killed, "no worker was killed while tiles ran"
    assert len(out["tiles"]) == 4
    a = RunStore(calm, "r").read_array("mosaic/level_0/object")
    b = RunStore(stormy, "r").read_array("mosaic/level_0/object")
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * np.abs(a).max())


def test_failing_tile_fails_flow_with_its_id_and_keeps_finished_tiles(
    harness, farfield_cxi, tmp_path, monkeypatch
):
    from flows import stages
    from flows.pipeline import TileFailure, pipeline

    real = stages.reconstruct_tile

    def flaky(store_path, tile, *a, **k):
        if tile == "t0001":  # the flow passes tile ids
            raise FloatingPointError("reconstruction diverged")
        return real(store_path, tile, *a, **k)

    monkeypatch.setattr(stages, "reconstruct_tile", flaky)
    store = tmp_path / "run.zarr"
    params = _params(farfield_cxi, store, cluster={"kind": "none"}, engine={"epochs": 5})
    with pytest.raises(TileFailure, match=r"t0001.*FloatingPointError.*diverged"):
        pipeline(params)
    done = set(RunStore(store, "r").completed_steps())
    assert {"reconstruct/t0000", "reconstruct/t0100", "reconstruct/t0101"} <= done
    assert "reconstruct/t0001" not in done and "mosaic" not in done


def test_the_flow_itself_refuses_a_setting_the_data_cannot_take_before_calibration(
    harness, farfield_cxi, tmp_path
):
    """A run from the Prefect UI or a deployment calls the flow directly, past `ptyflow
    run`'s checks: the flow makes them itself once the modality is known."""
    from flows.config_sources import ConfigError
    from flows.pipeline import pipeline

    store = tmp_path / "run.zarr"
    params = _params(farfield_cxi, store, cluster={"kind": "none"},
                     engine={"engine": "pine", "n_slices": 2, "slice_thickness": 1e-6})
    with pytest.raises(ConfigError, match="n_slices"):
        pipeline(params)
    assert "priors" not in set(RunStore(store, "r").completed_steps())


def test_a_setting_error_in_the_tiles_is_raised_as_itself_and_not_rerun(
    harness, farfield_cxi, tmp_path, monkeypatch
):
    """A bad setting found inside the tiles fails each tile once (Prefect's flow retry had
    no condition: every tile ran again on a new cluster) and reaches the caller as the
    ConfigError it is (the command line's exit 2), not a TileFailure (exit 1). The tiles
    get the store's absolute path (a worker's working directory may be another)."""
    from flows import stages
    from flows.config_sources import ConfigError
    from flows.pipeline import pipeline

    calls = []

    def bad(store_path, tile, *a, **k):
        calls.append((store_path, tile))
        raise ConfigError("engine.n_slices: needs the slices' spacing")

    monkeypatch.setattr(stages, "reconstruct_tile", bad)
    monkeypatch.chdir(tmp_path)
    params = _params(farfield_cxi, "run.zarr", cluster={"kind": "none"}, engine={"epochs": 1})
    with pytest.raises(ConfigError, match="n_slices"):
        pipeline(params)
    assert sorted(t for _, t in calls) == ["t0000", "t0001", "t0100", "t0101"]
    assert {p for p, _ in calls} == {str(tmp_path / "run.zarr")}


def test_tasks_pass_tile_ids_and_stages_read_the_plan_from_the_store(farfield_cxi, tmp_path):
    """A tile's frame list is an array: it stays in the store's plan, and the tasks pass
    ids (a 512^2 scan's tile dicts were megabytes of flow parameters and results)."""
    from flows import stages
    from flows.tasks import plan_task

    p = _params(farfield_cxi, tmp_path / "run.zarr", engine={"epochs": 1})
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    stages.calibrate(p.store, p.calibration)
    ids = plan_task.fn(p.store, p.tiling)
    assert ids == ["t0000", "t0001", "t0100", "t0101"]
    assert [t["tile_id"] for t in stages.planned_tiles(p.store, ids[::-1])] == ids[::-1]
    for t in ids:
        assert stages.reconstruct_tile(p.store, t, p.engine, p.calibration)["step"] == (
            f"reconstruct/{t}")
    assert stages.stitch(p.store, ids)["step"] == "mosaic"
    assert stages.stitch(p.store)["skipped"]  # None: every planned tile, the same mosaic
    with pytest.raises(DataError, match="t9999"):
        stages.planned_tiles(p.store, ["t9999"])
