"""Choosing the Dask cluster a flow's tiles run on, at run time.

Every kind advertises the same worker resource ``GPU=1`` and reconstruction tasks ask for
it, so a worker runs one tile at a time and the scheduling path is the same on CPU
workers, dask-cuda GPU workers and a facility's dask-jobqueue cluster.

A local cluster's scheduler, workers and dashboard listen on 127.0.0.1 unless
``$PTYFLOW_BIND_HOST`` says otherwise (:func:`flows.serve.bind_host`): the dashboard has
no authentication, and Dask's own default binds it on every interface.
"""

from __future__ import annotations

import os

from flows.params import ClusterParams

GPU_RESOURCE = {"GPU": 1}


def default_workers(cfg: ClusterParams) -> tuple[int, int]:
    """``(n_workers, threads_per_worker)``: one single-threaded worker per core by default
    (torch parallelises inside a tile only as far as ``torch_threads`` allows)."""
    cores = os.cpu_count() or 1
    threads = cfg.threads_per_worker or 1
    workers = cfg.n_workers or max(1, cores // threads)
    return workers, threads


def torch_threads(cfg: ClusterParams) -> int | None:
    """Threads each tile's torch may use: explicit, else the thread share of the workers a
    local cluster starts; ``None`` (kinds ``none`` and ``address``) where the tile decides
    where it runs: a Dask worker's own threads, or torch's default in this process
    (:func:`worker_threads`; it was 1, one core of a batch job's eight)."""
    if cfg.torch_threads:
        return cfg.torch_threads
    return default_workers(cfg)[1] if cfg.kind in ("local", "local_cuda") else None


def worker_threads() -> int | None:
    """The threads of the Dask worker running the caller, or ``None`` off a worker."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def local_cluster_kwargs(host: str | None = None) -> dict:
    """Where a local cluster listens: ``{"host", "dashboard_address"}``.

    Parameters
    ----------
    host : interface (default :func:`flows.serve.bind_host`, i.e. 127.0.0.1). The
        dashboard gets a free port on it (Dask's ``":0"`` alone means every interface).
    """
    from flows.serve import bind_host

    host = host or bind_host()
    dash_host = f"[{host}]" if ":" in host else host  # IPv6 literal
    return {"host": host, "dashboard_address": f"{dash_host}:0"}


def make_task_runner(cfg: ClusterParams):
    """A Prefect task runner for ``cfg``.

    ``none`` runs tasks in-process (a thread pool of one); the other kinds return a
    ``prefect_dask.DaskTaskRunner`` whose tasks report to the flow's own Prefect API (the
    serialised context carries the API settings, so workers start no server of their own).
    """
    if cfg.kind == "none":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if cfg.kind == "address":
        if not cfg.address:
            raise ValueError("cluster kind 'address' needs cluster.address (tcp://host:8786)")
        check_gpu_resource(cfg.address)
        return DaskTaskRunner(address=cfg.address)
    n_workers, threads = default_workers(cfg)
    if cfg.kind == "local":
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": n_workers,
                "threads_per_worker": threads,
                "processes": True,
                "resources": GPU_RESOURCE,
                **local_cluster_kwargs(),
            },
        )
    if cfg.kind == "local_cuda":
        try:
            import dask_cuda  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                "cluster kind 'local_cuda' needs dask-cuda: pip install 'ptyflow[gpu]'"
            ) from exc
        # One worker per visible GPU (or the first n_workers of them); each advertises
        # GPU=1 like the CPU workers.
        sizes = {k: v for k, v in (("n_workers", cfg.n_workers),
                                   ("threads_per_worker", cfg.threads_per_worker)) if v}
        return DaskTaskRunner(
            cluster_class="dask_cuda.LocalCUDACluster",
            cluster_kwargs={"resources": GPU_RESOURCE, **sizes, **local_cluster_kwargs()},
        )
    raise ValueError(f"unknown cluster kind {cfg.kind!r}")


def check_gpu_resource(address: str, timeout: float = 30.0) -> None:
    """Refuse an existing cluster whose workers all lack the ``GPU`` resource.

    Tile tasks ask for ``GPU=1``; on workers that do not advertise it they wait forever
    (the scheduler's ``no-worker`` state), silently. ``dask worker`` and dask-jobqueue
    advertise it only when asked, so the usual mistake is a cluster started without it.
    A cluster with no workers yet (adaptive, still scaling) is accepted.

    Raises
    ------
    flows.config_sources.ConfigError
        Naming ``cluster.address`` and how to start the workers.
    """
    from distributed import Client

    from flows.config_sources import ConfigError

    with Client(address, timeout=timeout, set_as_default=False) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
    workers = list(workers)
    if workers and not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers):
        raise ConfigError(
            f"cluster.address {address}: none of its {len(workers)} worker(s) advertises "
            "the GPU resource the tile tasks ask for (they would wait forever); start them "
            "with `dask worker ... --resources GPU=1` (dask-jobqueue: "
            "worker_extra_args=['--resources', 'GPU=1'])"
        )


def on_gpu_worker(engine: str, settings: dict) -> dict:
    """``settings`` with ``device: cuda`` on a GPU worker -- a process given its GPU by
    ``CUDA_VISIBLE_DEVICES`` (dask-cuda sets it for each of its workers, batch systems on
    GPU nodes) that sees one -- where the engine takes a device and the user named none:
    tiles on ``local_cuda`` workers ran the engine on the CPU (its default device) beside an
    idle GPU. Plain ``local`` workers on a GPU machine stay on the CPU (they would all share
    one GPU)."""
    import torch

    from ptytasks.engines.registry import option_names

    if "device" in settings or "device" not in option_names(engine):
        return settings
    given = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1")
    return {**settings, "device": "cuda"} if given and torch.cuda.is_available() else settings
