"""``ptyflow server start | worker | deploy``: a local Prefect server, a process worker
and the deployments, in the foreground (Ctrl-C stops them).

The child (``prefect server start``, ``prefect worker start``) runs in a process group of
its own and gets SIGTERM when this command dies, SIGKILL included (:mod:`flows.lifeline`);
SIGINT, SIGTERM and SIGHUP of this command are passed on to that group, and whatever is
left in it when the child has exited (a worker's flow runs) is killed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import typer

server_app = typer.Typer(
    help="Prefect server helpers: start a server, a process worker, deploy the flows.",
    no_args_is_help=True,
)


def _api_url(api_url: str | None) -> str:
    import os

    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise typer.BadParameter("give --api-url or set PREFECT_API_URL "
                                 "(e.g. http://127.0.0.1:4200/api)")  # fmt: skip
    return url


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_GRACE_S = 30.0  # after a forwarded signal, then SIGKILL


def _foreground(args: list[str], env: dict) -> None:
    """Run a child in the foreground until it exits; its exit code becomes ours.

    The child has a process group of its own (so a stop reaches its children too) and
    dies with us (PR_SET_PDEATHSIG = SIGTERM). Our SIGINT/SIGTERM/SIGHUP go to its group;
    a child still running ``STOP_GRACE_S`` after that is killed.
    """
    from flows.lifeline import guarded
    from flows.serve import REPO_ROOT, stop_process

    proc = subprocess.Popen(guarded(args, signal.SIGTERM), env=env, cwd=REPO_ROOT,
                            start_new_session=True)  # fmt: skip
    asked: list[float] = []

    def forward(signum, frame) -> None:
        asked.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while proc.poll() is None:
            if asked and time.monotonic() - asked[0] > STOP_GRACE_S:
                stop_process(proc, timeout=1.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
        code = proc.returncode
    finally:
        stop_process(proc)  # only if we leave by an exception
        # Leftovers of the group (a worker's flow-run subprocesses) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # A child ended by a signal reports -N; a shell would say 128+N.
    raise typer.Exit(code if code >= 0 else 128 - code)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: may resolve to anything
        return False


def _security_warnings(host: str, database_url: str | None, env: dict) -> list[str]:
    """What ``ptyflow server start`` warns about before it starts the server."""
    out = []
    if not _is_loopback(host) and not env.get("PREFECT_SERVER_API_AUTH_STRING"):
        out.append(f"listening on {host} without PREFECT_SERVER_API_AUTH_STRING: anyone who "
                   "reaches this port can read and start flow runs (docs/operations.md, "
                   "'Security')")  # fmt: skip
    pw = urlsplit(database_url).password if database_url else None
    if pw and "PREFECT_SERVER_DATABASE_PASSWORD" not in pw \
            and "PREFECT_API_DATABASE_PASSWORD" not in pw:  # fmt: skip
        out.append("--database-url holds a password, which every user sees in the process "
                   "list: put ${PREFECT_SERVER_DATABASE_PASSWORD} in the URL instead and "
                   "the password in that environment variable")  # fmt: skip
    return out


@server_app.command("start")
def start(
    host: str = typer.Option(
        "127.0.0.1",
        envvar="PTYFLOW_BIND_HOST",
        help="Interface to listen on (keep it local unless PREFECT_SERVER_API_AUTH_STRING "
        "is set or a proxy with authentication is in front).",
    ),
    port: int = typer.Option(4200, help="Port of the API and UI."),
    home: Path | None = typer.Option(None, help="PREFECT_HOME (SQLite database, profiles)."),
    database_url: str | None = typer.Option(
        None,
        help="Database URL, e.g. postgresql+asyncpg://user:${PREFECT_SERVER_DATABASE_PASSWORD}"
        "@db/prefect (facility; the password from that environment variable, not argv).",
    ),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Serve the web UI."),
) -> None:
    """Run a Prefect server (API and UI) in the foreground.

    Then, in other shells: export PREFECT_API_URL=http://HOST:PORT/api, `ptyflow server
    deploy`, `ptyflow server worker`.
    """
    from flows.serve import server_env

    env = server_env(home=home, database_url=database_url,
                     extra={"PREFECT_UI_ENABLED": str(ui).lower()})  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    # Where the browser finds the API (else the UI assumes port 4200); behind a proxy or
    # on 0.0.0.0 set PREFECT_UI_API_URL to the address users reach.
    env.setdefault("PREFECT_UI_API_URL", f"http://{host}:{port}/api")
    for warning in _security_warnings(host, database_url, env):
        typer.echo(f"ptyflow: warning: {warning}", err=True)
    typer.echo(f"Prefect server on http://{host}:{port} (API http://{host}:{port}/api)")
    _foreground([sys.executable, "-m", "prefect", "server", "start", "--host", host,
                 "--port", str(port)], env)  # fmt: skip


@server_app.command("worker")
def worker(
    api_url: str | None = typer.Option(None, help="Server API (default $PREFECT_API_URL)."),
    pool: str = typer.Option("ptyflow-process", help="Work pool to poll."),
    limit: int | None = typer.Option(None, help="Flow runs at once on this worker."),
) -> None:
    """Run a process worker in the foreground: it runs deployed flows in this checkout."""
    from flows.serve import server_env

    env = server_env(api_url=_api_url(api_url))
    args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
            "--type", "process"]  # fmt: skip
    if limit:
        args += ["--limit", str(limit)]
    _foreground(args, env)


@server_app.command("deploy")
def deploy(
    api_url: str | None = typer.Option(None, help="Server API (default $PREFECT_API_URL)."),
    pool: str = typer.Option("ptyflow-process", help="Process work pool (created if new)."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for the server's health."),
) -> None:
    """Run deployments/init.py: wait for the server, create the pool, deploy all flows.

    Idempotent: run it again after changing deployments/prefect.yaml.
    """
    from flows.serve import REPO_ROOT, server_env

    script = REPO_ROOT / "deployments" / "init.py"
    args = [sys.executable, str(script), "--api-url", _api_url(api_url), "--pool", pool,
            "--timeout", str(timeout)]  # fmt: skip
    _foreground(args, server_env())
