"""A local Dask cluster (scheduler, dashboard, workers) listens on loopback only, unless
``PTYFLOW_BIND_HOST`` says otherwise (issue #22, item 6)."""

from __future__ import annotations

import psutil
import pytest

from flows.cluster import local_cluster_kwargs, make_task_runner
from flows.params import ClusterParams

pytestmark = pytest.mark.timeout(120)


def _listening(pids) -> list[tuple[str, int]]:
    """``(ip, port)`` of every TCP socket the processes ``pids`` listen on."""
    out = []
    for pid in pids:
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN:
                out.append((c.laddr.ip, c.laddr.port))
    return out


def test_local_cluster_listens_on_loopback_only(monkeypatch):
    from distributed import LocalCluster

    monkeypatch.delenv("PTYFLOW_BIND_HOST", raising=False)
    runner = make_task_runner(ClusterParams(kind="local", n_workers=1))
    kwargs = {**runner.cluster_kwargs, "n_workers": 1}
    with LocalCluster(**kwargs) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        dash_port = cluster.scheduler.http_server.port
        workers = [w.process.process.pid for w in cluster.workers.values()]
        assert workers, "no worker process"
        socks = _listening([psutil.Process().pid, *workers])
    ports = {p for _, p in socks}
    assert dash_port in ports, socks  # the dashboard is among the sockets inspected
    assert int(cluster.scheduler_address.rsplit(":", 1)[1]) in ports, socks
    assert {ip for ip, _ in socks} == {"127.0.0.1"}, socks


def test_bind_host_is_configurable(monkeypatch):
    monkeypatch.setenv("PTYFLOW_BIND_HOST", "0.0.0.0")
    assert local_cluster_kwargs() == {"host": "0.0.0.0", "dashboard_address": "0.0.0.0:0"}
    monkeypatch.setenv("PTYFLOW_BIND_HOST", "::1")
    assert local_cluster_kwargs()["dashboard_address"] == "[::1]:0"
    monkeypatch.delenv("PTYFLOW_BIND_HOST")
    assert local_cluster_kwargs() == {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
