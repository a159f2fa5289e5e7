"""flows.serve.healthy_on_a_free_port (and start_healthy_server over it): a port taken
between its pick and the server's bind is retried on a new one; any other failure is not (no
server is started here)."""

from __future__ import annotations

import pytest

from flows import serve


@pytest.fixture
def fake(monkeypatch):
    """Servers whose outcome per start is scripted: ``"ok"``, ``"taken"`` or ``"crash"``."""
    script, started, stopped = [], [], []

    picked = []

    def free_port(host="127.0.0.1"):
        picked.append(40001 + len(picked))
        return picked[-1]

    def start_server(*, port, env=None, log=None, ui=True):
        started.append(port)
        return f"proc{len(started)}", f"http://127.0.0.1:{port}/api"

    def wait_healthy(url, timeout, proc, log):
        outcome = script.pop(0)
        if outcome == "taken":
            raise RuntimeError("Prefect server exited with code 1\n--- log tail ---\n"
                               "Port 40001 is already in use.")
        if outcome == "crash":
            raise RuntimeError("Prefect server exited with code 1\n--- log tail ---\nboom")
        return 1.0

    monkeypatch.setattr(serve, "free_port", free_port)
    monkeypatch.setattr(serve, "start_server", start_server)
    monkeypatch.setattr(serve, "wait_healthy", wait_healthy)
    monkeypatch.setattr(serve, "stop_process", stopped.append)
    return script, started, stopped


def test_a_taken_port_is_retried_on_a_new_one(fake):
    script, started, stopped = fake
    script += ["taken", "ok"]
    proc, url = serve.start_healthy_server(log="server.log")
    assert (proc, url) == ("proc2", "http://127.0.0.1:40002/api")
    assert stopped == ["proc1"] and len(started) == 2


def test_other_failures_and_the_last_try_are_not_retried(fake):
    script, started, stopped = fake
    script += ["crash"]
    with pytest.raises(RuntimeError, match="boom"):
        serve.start_healthy_server(log="server.log")
    assert len(started) == 1 and stopped == ["proc1"]
    script += ["taken"] * 3
    with pytest.raises(RuntimeError, match="already in use"):
        serve.start_healthy_server(log="server.log", tries=3)
    assert len(started) == 4 and len(stopped) == 4


def test_a_command_line_server_is_retried_with_its_own_launcher(fake):
    script, started, stopped = fake
    script += ["taken", "taken", "ok"]
    ports = []
    proc, url = serve.healthy_on_a_free_port(lambda port: ports.append(port) or f"cli{port}",
                                             log="server.log")  # fmt: skip
    assert ports == [40001, 40002, 40003] and started == []
    assert (proc, url) == ("cli40003", "http://127.0.0.1:40003/api")
    assert stopped == ["cli40001", "cli40002"]
