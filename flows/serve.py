"""Prefect server helpers: start a server or worker, wait for health, deploy, stop by PID.

Used by ``ptyflow server ...``, ``deployments/init.py``, the CLI's one-API-per-run rule
(:func:`prefect_api`) and the deployment tests. Every process started here gets its own
process group, so :func:`stop_process` ends it together with its children (a worker's flow
run subprocesses, a server's uvicorn process) and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
DEFAULT_POOL = "ptyflow-process"
DEPLOYMENTS = ("pipeline/pipeline", "reprocess-facility/reprocess-facility",
               "gigapixel-coded/gigapixel-coded")  # fmt: skip


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_env(
    *,
    api_url: str | None = None,
    home: str | os.PathLike | None = None,
    database_url: str | None = None,
    extra: dict | None = None,
) -> dict[str, str]:
    """Environment for a server, worker or CLI child: ``os.environ`` plus Prefect settings.

    Parameters
    ----------
    api_url : PREFECT_API_URL for clients (workers, ``prefect deploy``).
    home : PREFECT_HOME (profiles, the default SQLite database ``<home>/prefect.db``).
    database_url : PREFECT_API_DATABASE_CONNECTION_URL, e.g.
        ``postgresql+asyncpg://user:pw@host/prefect`` at a facility.
    extra : further variables (win over everything else).
    """
    env = dict(os.environ)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if home is not None:
        env["PREFECT_HOME"] = str(home)
        env["PREFECT_PROFILES_PATH"] = str(Path(home) / "profiles.toml")
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def _popen(args: list[str], env: dict, log: str | os.PathLike | None, cwd=None):
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    try:
        # start_new_session: a process group of its own, so stop_process can end the
        # whole tree (uvicorn, a worker's flow-run subprocesses) by one PID.
        return subprocess.Popen(args, env=env, cwd=cwd or REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    finally:
        if log:
            out.close()


def start_server(
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    env: dict | None = None,
    log: str | os.PathLike | None = None,
    ui: bool = True,
) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` in the background; returns ``(process, api_url)``.

    The caller waits with :func:`wait_healthy` and ends it with :func:`stop_process`.
    """
    port = port or free_port(host)
    env = dict(env or server_env())
    env.setdefault("PREFECT_UI_ENABLED", "true" if ui else "false")
    # The UI asks /ui-settings where the API is; without this it says port 4200.
    env.setdefault("PREFECT_UI_API_URL", f"http://{host}:{port}/api")
    env.pop("PREFECT_API_URL", None)  # the server itself is no client
    args = [sys.executable, "-m", "prefect", "server", "start", "--host", host,
            "--port", str(port)]  # fmt: skip
    proc = _popen(args, env, log)
    return proc, f"http://{host}:{port}/api"


def start_worker(
    pool: str = DEFAULT_POOL,
    *,
    env: dict,
    log: str | os.PathLike | None = None,
    limit: int | None = None,
) -> subprocess.Popen:
    """Start a process worker for ``pool`` (``env`` must carry PREFECT_API_URL)."""
    args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
            "--type", "process"]  # fmt: skip
    if limit:
        args += ["--limit", str(limit)]
    return _popen(args, env, log)


def stop_process(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """End ``proc`` and its process group: SIGTERM, then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # A group member that outlived its leader (a flow-run subprocess) is killed too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_healthy(api_url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None,
                 log: str | os.PathLike | None = None) -> float:  # fmt: skip
    """Poll ``<api_url>/health`` until it answers 200; returns the seconds waited.

    Raises
    ------
    TimeoutError
        Not healthy within ``timeout`` (a slow machine: raise it), with the log's tail.
    RuntimeError
        ``proc`` exited before becoming healthy.
    """
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited with code {proc.returncode}"
                               + _tail(log))  # fmt: skip
        try:
            if httpx.get(f"{api_url.rstrip('/')}/health", timeout=5).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect API {api_url} not healthy after {timeout:.0f} s" + _tail(log))


def _tail(log, n: int = 3000) -> str:
    if not log or not Path(log).exists():
        return ""
    return "\n--- log tail ---\n" + Path(log).read_text(errors="replace")[-n:]


# ----------------------------------------------------------------------------- init
async def ensure_work_pool(name: str = DEFAULT_POOL) -> bool:
    """Create the process work pool ``name`` unless it exists; True when created.

    An existing pool is left as it is (operators may have tuned its job template).
    """
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        await client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                                     base_job_template=template))  # fmt: skip
        return True


def deploy_all(api_url: str, *, pool: str = DEFAULT_POOL, timeout: float = 120.0,
               env: dict | None = None, prefect_file: Path = PREFECT_FILE) -> None:  # fmt: skip
    """The init script: wait for the API, create the work pool, deploy every deployment.

    Idempotent: the pool is created once, ``prefect deploy`` upserts deployments by name.
    ``prefect deploy`` runs from the repository root, so its build step records that
    folder as the deployments' working directory (``pull: set_working_directory``).
    """
    import anyio
    from prefect.settings import PREFECT_API_URL, temporary_settings

    wait_healthy(api_url, timeout)
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        created = anyio.run(ensure_work_pool, pool)
    print(f"work pool {pool!r}: {'created' if created else 'exists'}", flush=True)
    env = server_env(api_url=api_url, extra={"PTYFLOW_WORK_POOL": pool, **(env or {})})
    # The facility deployment scans <root>/raw and writes <root>/processed.
    root = Path(env.setdefault("PTYFLOW_FACILITY_ROOT", str(Path.home() / "ptyflow-facility")))
    for sub in ("raw", "processed"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
            "--prefect-file", str(prefect_file)]  # fmt: skip
    res = subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"prefect deploy failed ({res.returncode}):\n{res.stdout[-4000:]}"
                           f"\n{res.stderr[-4000:]}")  # fmt: skip
    print("deployed: " + ", ".join(DEPLOYMENTS), flush=True)


# ----------------------------------------------------------------------------- one API
@contextlib.contextmanager
def prefect_api(timeout: float = 120.0) -> Iterator[str | None]:
    """One Prefect API for this process and every Dask worker it starts.

    With ``PREFECT_API_URL`` set (a real server) nothing is started. Otherwise one
    temporary server (Prefect's ephemeral server, SQLite under PREFECT_HOME) runs for the
    whole block, and ``PREFECT_API_URL`` is exported so worker processes report to it
    instead of starting a server each.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if url:
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer(port=free_port())
    # Code that asks for "the" ephemeral server (None key) must find this one, not start
    # a second (the same trick as prefect.testing.utilities.prefect_test_harness).
    prior = SubprocessASGIServer._instances.get(None)
    SubprocessASGIServer._instances[None] = server
    server.start(timeout=int(timeout))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                drain_prefect_workers()  # logs and events reach the API before it stops
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()
        if prior is not None:
            SubprocessASGIServer._instances[None] = prior
        else:
            SubprocessASGIServer._instances.pop(None, None)


def drain_prefect_workers() -> None:
    """Flush Prefect's background log and event workers (else they retry after the
    temporary server is gone, and the process hangs on exit)."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # never started
            r = APILogWorker.instance().drain()
            if inspect.isawaitable(r):
                await r
        r = EventsWorker.drain_all()
        if inspect.isawaitable(r):
            await r

    run_coro_as_sync(drain())
