"""Helpers of the process-lifetime tests: is a process gone, is a port free, which
sockets does a process tree listen on."""

from __future__ import annotations

import contextlib
import socket
import time

import psutil


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (a connection is refused)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) != 0


def listening(port: int, host: str = "127.0.0.1") -> bool:
    return not port_free(port, host)


def wait_for(cond, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until ``cond()`` held, None when it did not within ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def listen_addresses(pid: int) -> list[tuple[str, int]]:
    """``(ip, port)`` of every TCP socket ``pid`` and its descendants listen on."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    out = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            out += [(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN]  # fmt: skip
    return out
