"""``cluster.kind: address``: the pipeline on an existing Dask cluster -- a ``dask
scheduler`` and two ``dask worker --resources GPU=1`` processes, as dask-jobqueue starts
them -- and one worker (nanny and all, a lost batch node) killed in the middle of a tile:
the run completes and its mosaic equals an undisturbed run's."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from flows.params import PipelineParams
from storage.store import RunStore
from tests.real_services import dask_cluster

# slow: a real scheduler and worker processes (~40 s on 2 cores)
pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore"), pytest.mark.slow]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _params(cxi, store, address) -> PipelineParams:
    return PipelineParams.from_mapping({
        "input": str(cxi), "store": str(store), "tiling": {"grid": [2, 2]},
        "engine": {"engine": "rpie", "epochs": 30, "learn_probe": False},
        "cluster": {"kind": "address", "address": address, "torch_threads": 1},
    })  # fmt: skip


def _tiles_running(store) -> list[str]:
    """Tiles whose engine has finished an epoch but that are not stored yet."""
    try:
        marks = RunStore(store, "r").completed_steps()
    except Exception:  # noqa: BLE001 - not created yet: nothing stored
        marks = {}
    running = []
    for f in store.parent.glob(f"{store.name}.checkpoints/*.epoch"):
        step = f.name.removesuffix(".epoch").replace("__", "/")
        if step not in marks:
            running.append(step)
    return running


def test_address_cluster_survives_a_killed_worker(harness, tmp_path):
    from distributed import Client

    from flows.pipeline import pipeline
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    cxi = tmp_path / "scan.cxi"
    write_cxi(cxi, simulate("farfield", seed=1, frame_size=32, n_positions=64, known_probe=True))
    with dask_cluster(tmp_path) as cluster:
        address, workers = cluster["address"], cluster["workers"]
        t0 = time.monotonic()
        calm = pipeline(_params(cxi, tmp_path / "calm.zarr", address))
        calm_s = time.monotonic() - t0
        assert {r["worker"] for r in calm["tiles"]} == set(workers)  # both took tiles
        assert all(r["gpu_free"] == 0 for r in calm["tiles"])  # one GPU slot, held

        stormy = tmp_path / "stormy.zarr"
        killed: dict = {}

        def killer() -> None:
            # Both workers mid-tile (two tiles past their first epoch, one per worker):
            # kill the first worker's whole process group, as a lost node.
            deadline = time.monotonic() + 300
            with Client(address, timeout=10) as client:
                while time.monotonic() < deadline:
                    running = _tiles_running(stormy)
                    if len(running) >= 2:
                        victim = next(iter(workers))
                        busy = client.processing(workers=[victim]).get(victim, ())
                        os.killpg(workers[victim].pid, signal.SIGKILL)  # no goodbye
                        killed.update(address=victim, busy=list(busy), tiles=running)
                        return
                    time.sleep(0.1)

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        t0 = time.monotonic()
        out = pipeline(_params(cxi, stormy, address))
        stormy_s = time.monotonic() - t0
        th.join(timeout=10)
        assert killed, "no worker was killed while tiles ran"
        assert killed["busy"], "the killed worker was not computing a tile"
        victim = killed["address"]
        assert workers[victim].poll() is not None
        with Client(address, timeout=10) as client:
            assert set(client.scheduler_info()["workers"]) == set(workers) - {victim}
        assert len(out["tiles"]) == 4
        # The survivor finished what the lost worker held.
        survivor = (set(workers) - {victim}).pop()
        assert sum(r["worker"] == survivor for r in out["tiles"]) >= 3

    s_calm, s_storm = RunStore(tmp_path / "calm.zarr", "r"), RunStore(stormy, "r")
    assert s_storm.is_complete("mosaic") and s_storm.is_complete("metrics")
    a = s_calm.read_array("mosaic/level_0/object")
    b = s_storm.read_array("mosaic/level_0/object")
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
    print(
        f"undisturbed run {calm_s:.0f} s, with a worker killed ({killed['tiles']}) "
        f"{stormy_s:.0f} s; max |difference| {np.abs(b - a).max():.2e}"
    )
