"""``ptyflow server start | worker | deploy``: a local Prefect server, a process worker
and the deployments, in the foreground (Ctrl-C stops them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def _foreground(args: list[str], env: dict) -> None:
    """Run a child in the foreground; its exit code becomes ours."""
    from flows.serve import REPO_ROOT

    try:
        code = subprocess.call(args, env=env, cwd=REPO_ROOT)
    except KeyboardInterrupt:  # the child got the same SIGINT and shuts down itself
        code = 130
    raise typer.Exit(code)


@server_app.command("start")
def start(
    host: str = typer.Option(
        "127.0.0.1",
        help="Interface to listen on (keep it local "
        "unless a proxy with authentication is in front).",
    ),
    port: int = typer.Option(4200, help="Port of the API and UI."),
    home: Path | None = typer.Option(None, help="PREFECT_HOME (SQLite database, profiles)."),
    database_url: str | None = typer.Option(
        None, help="Database URL, e.g. postgresql+asyncpg://user:pw@db/prefect (facility)."
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
