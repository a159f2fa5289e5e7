"""An existing Dask cluster whose workers do not advertise the ``GPU`` resource the tile
tasks ask for is refused at once (exit 2 naming ``cluster.address``), not left waiting
forever; and the gigapixel flow takes the store's lock before it writes anything."""

from __future__ import annotations

import pytest
from distributed import LocalCluster

from flows.cluster import make_task_runner
from flows.config_sources import ConfigError
from flows.params import ClusterParams
from storage.lock import StoreLockedError
from tests.lock_holder import lock_held_elsewhere


@pytest.mark.parametrize("resources", [None, {"GPU": 1}])
def test_an_address_whose_workers_lack_the_gpu_resource_is_refused(resources):
    kw = {"resources": resources} if resources else {}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None, **kw) as cluster:  # fmt: skip
        cfg = ClusterParams(kind="address", address=cluster.scheduler_address)
        if resources:
            assert make_task_runner(cfg) is not None
        else:
            with pytest.raises(ConfigError, match=r"cluster.address .* GPU resource"):
                make_task_runner(cfg)


def test_local_cuda_takes_the_worker_counts_given(monkeypatch):
    """dask_cuda's LocalCUDACluster starts one worker per visible GPU unless told
    ``n_workers`` (the first n GPUs): a count the user set must reach it."""
    import sys
    import types

    fake = types.ModuleType("dask_cuda")  # the gpu extra is not installed here
    fake.LocalCUDACluster = type("LocalCUDACluster", (), {})
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    runner = make_task_runner(ClusterParams(kind="local_cuda", n_workers=2,
                                            threads_per_worker=3))
    assert runner.cluster_kwargs["n_workers"] == 2
    assert runner.cluster_kwargs["threads_per_worker"] == 3
    assert runner.cluster_kwargs["resources"] == {"GPU": 1}
    default = make_task_runner(ClusterParams(kind="local_cuda")).cluster_kwargs
    assert "n_workers" not in default and "threads_per_worker" not in default


def test_worker_counts_with_an_existing_cluster_are_refused():
    """n_workers / threads_per_worker size a cluster ptyflow starts; with kind 'address'
    the run used the scheduler's own workers and dropped them without a word."""
    from flows.params import PipelineParams

    base = {"input": "d.cxi", "store": "r.zarr"}
    for name in ("n_workers", "threads_per_worker"):
        cluster = {"kind": "address", "address": "tcp://h:8786", name: 4}
        with pytest.raises(ConfigError, match=f"cluster.{name}: .*cluster.address tcp://h:8786"):
            PipelineParams.from_mapping({**base, "cluster": cluster})
        ClusterParams(kind="local", **{name: 4})  # a cluster it starts: used
    ClusterParams(kind="address", address="tcp://h:8786", torch_threads=2)  # used by tiles


def test_gigapixel_takes_the_store_lock_before_ingest(tmp_path):
    from flows.gigapixel import GigapixelParams, gigapixel_coded

    store = tmp_path / "g.zarr"
    with lock_held_elsewhere(store, "other-run"):
        p = GigapixelParams.from_mapping({"input": str(tmp_path / "x.cxi"), "store": str(store)})
        with pytest.raises(StoreLockedError, match="other-run"):
            gigapixel_coded.fn(p)
        assert not store.exists()  # nothing ingested under the other run


def test_torch_threads_follow_where_a_tile_runs():
    """A local cluster's workers have one thread each by default; a tile run in this
    process (kind none) or on an existing cluster's worker (address: e.g. an 8-core batch
    job) is not held to one thread: the worker's own threads, else torch's default."""
    from flows.cluster import torch_threads, worker_threads
    from flows.params import ClusterParams

    assert torch_threads(ClusterParams(kind="local")) == 1
    assert torch_threads(ClusterParams(kind="local", torch_threads=3)) == 3
    assert torch_threads(ClusterParams(kind="none")) is None
    assert torch_threads(ClusterParams(kind="address", address="tcp://127.0.0.1:1")) is None
    assert worker_threads() is None  # not on a Dask worker


def test_a_tile_on_a_dask_worker_takes_the_workers_threads():
    from distributed import Client, LocalCluster

    from flows.cluster import worker_threads

    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        assert c.submit(worker_threads).result() == 3
