"""flows.serve.start_healthy_server: a port taken between its pick and the server's bind is
retried on a new one; any other failure is not (no server is started here)."""

from __future__ import annotations

import pytest

from flows import serve


@pytest.fixture
def fake(monkeypatch):
    """Servers whose outcome per start is scripted: ``"ok"``, ``"taken"`` or ``"crash"``."""
    script, started, stopped = [], [], []

    def start_server(*, env=None, log=None, ui=True):
        started.append(len(started))
        return f"proc{len(started)}", f"http://127.0.0.1:{40000 + len(started)}/api"

    def wait_healthy(url, timeout, proc, log):
        outcome = script.pop(0)
        if outcome == "taken":
            raise RuntimeError("Prefect server exited with code 1\n--- log tail ---\n"
                               "Port 40001 is already in use.")
        if outcome == "crash":
            raise RuntimeError("Prefect server exited with code 1\n--- log tail ---\nboom")
        return 1.0

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
