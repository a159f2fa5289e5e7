"""What ``ptyflow server start`` warns about (issue #22, item 6): an exposed server
without API auth, a database password on the command line; and telemetry off in the
environment of every server and client ptyflow starts. No server is started here."""

from __future__ import annotations

from flows.cli_server import _security_warnings
from flows.serve import bind_host, server_env
from flows.telemetry import TELEMETRY_OFF

PG = "postgresql+asyncpg://prefect:{pw}@db.example.org:5432/prefect"


def test_exposed_server_without_auth_is_warned_about():
    assert _security_warnings("127.0.0.1", None, {}) == []
    assert _security_warnings("::1", None, {}) == []
    assert _security_warnings("localhost", None, {}) == []
    (w,) = _security_warnings("0.0.0.0", None, {})
    assert "PREFECT_SERVER_API_AUTH_STRING" in w
    assert _security_warnings("0.0.0.0", None, {"PREFECT_SERVER_API_AUTH_STRING": "a:b"}) == []
    assert len(_security_warnings("beamline-ws.example.org", None, {})) == 1


def test_password_in_argv_is_warned_about_placeholder_is_not():
    (w,) = _security_warnings("127.0.0.1", PG.format(pw="SECRET"), {})
    assert "PREFECT_SERVER_DATABASE_PASSWORD" in w and "SECRET" not in w
    assert _security_warnings("127.0.0.1", PG.format(pw="${PREFECT_SERVER_DATABASE_PASSWORD}"),
                              {}) == []  # fmt: skip
    assert _security_warnings("127.0.0.1", "sqlite+aiosqlite:////tmp/p.db", {}) == []


def test_telemetry_forced_off_and_loopback_by_default(monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    env = server_env()
    assert {k: env[k] for k in TELEMETRY_OFF} == TELEMETRY_OFF
    assert TELEMETRY_OFF["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    monkeypatch.delenv("PTYFLOW_BIND_HOST", raising=False)
    assert bind_host() == "127.0.0.1"
    monkeypatch.setenv("PTYFLOW_BIND_HOST", " 10.0.0.5 ")
    assert bind_host() == "10.0.0.5"
