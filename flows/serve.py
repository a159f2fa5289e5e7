"""Prefect server helpers: start a server or worker, wait for health, deploy, stop by PID.

Used by ``ptyflow server ...``, ``deployments/init.py``, the CLI's one-API-per-run rule
(:func:`prefect_api`) and the deployment tests. Every process started here gets its own
process group, so :func:`stop_process` ends it together with its children (a worker's flow
run subprocesses, a server's uvicorn process) and nothing else, and dies with the process
that started it, SIGKILL included (:mod:`flows.lifeline`). Every server runs with
telemetry off (:data:`flows.telemetry.TELEMETRY_OFF`) and, unless configured, on 127.0.0.1
(:func:`bind_host`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from flows.telemetry import TELEMETRY_OFF

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
DEFAULT_POOL = "ptyflow-process"
DEPLOYMENTS = ("pipeline/pipeline", "reprocess-facility/reprocess-facility",
               "gigapixel-coded/gigapixel-coded")  # fmt: skip
BIND_HOST_ENV = "PTYFLOW_BIND_HOST"
LOOPBACK = "127.0.0.1"


def bind_host() -> str:
    """The interface ptyflow's servers listen on: ``$PTYFLOW_BIND_HOST``, else 127.0.0.1.

    It applies to a local Dask cluster's scheduler and dashboard and is the default of
    ``ptyflow server start --host``; the temporary server of ``ptyflow run`` is always
    on 127.0.0.1. Anything else than loopback exposes an unauthenticated service (the
    Dask dashboard has no login): set it only behind a firewall or an authenticating proxy.
    """
    return os.environ.get(BIND_HOST_ENV, "").strip() or LOOPBACK


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
    env.update(TELEMETRY_OFF)
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
    from flows.lifeline import guarded

    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    try:
        # start_new_session: a process group of its own, so stop_process can end the
        # whole tree (uvicorn, a worker's flow-run subprocesses) by one PID. SIGTERM when
        # we die: servers and workers then shut down cleanly, and end their own children.
        return subprocess.Popen(guarded(args, signal.SIGTERM), env=env, cwd=cwd or REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
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

    The caller waits with :func:`wait_healthy` and ends it with :func:`stop_process`; the
    server gets SIGTERM when the caller dies. Telemetry is off whatever ``env`` says.
    """
    port = port or free_port(host)
    env = {**(env or server_env()), **TELEMETRY_OFF}
    env.setdefault("PREFECT_UI_ENABLED", "true" if ui else "false")
    # The UI asks /ui-settings where the API is; without this it says port 4200.
    env.setdefault("PREFECT_UI_API_URL", f"http://{host}:{port}/api")
    env.pop("PREFECT_API_URL", None)  # the server itself is no client
    args = [sys.executable, "-m", "prefect", "server", "start", "--host", host,
            "--port", str(port)]  # fmt: skip
    proc = _popen(args, env, log)
    return proc, f"http://{host}:{port}/api"


def start_healthy_server(*, env: dict | None = None, log: str | os.PathLike | None = None,
                         timeout: float = 120.0, ui: bool = True,
                         tries: int = 3) -> tuple[subprocess.Popen, str]:
    """:func:`start_server` on a port the OS picks, then :func:`wait_healthy`; returns
    ``(process, api_url)`` of a healthy server (a taken port retried:
    :func:`healthy_on_a_free_port`)."""

    def launch(port: int) -> subprocess.Popen:
        return start_server(port=port, env=env, log=log, ui=ui)[0]

    return healthy_on_a_free_port(launch, log=log, timeout=timeout, tries=tries)


def healthy_on_a_free_port(launch, *, log: str | os.PathLike | None, timeout: float = 120.0,
                           tries: int = 3, host: str = "127.0.0.1",
                           ) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """Start a Prefect server with ``launch(port) -> Popen`` on a port the OS picks and wait
    until it is healthy; returns ``(process, api_url)``.

    The port is free when picked, but any outgoing connection may draw it from the ephemeral
    range before the server binds it (seen in the test suite: "Port 41637 is already in
    use"); then the server exits and a new port is tried, ``tries`` times in all. The
    refusal is read from ``log``, which ``launch`` writes (without one nothing is retried);
    any other failure is raised at once.
    """
    for attempt in range(tries):
        port = free_port(host)
        proc = launch(port)
        url = f"http://{host}:{port}/api"
        try:
            wait_healthy(url, timeout, proc, log)
            return proc, url
        except RuntimeError as e:  # the server exited before it was healthy
            stop_process(proc)
            if "already in use" not in str(e) or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


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
    temporary server (Prefect's ephemeral server, SQLite under PREFECT_HOME, on
    127.0.0.1, telemetry off) runs for the whole block, and ``PREFECT_API_URL`` is
    exported so worker processes report to it instead of starting a server each.

    The server cannot outlive this process (:class:`flows.temporary_server.TemporaryServer`:
    killed by the kernel if this process dies, SIGKILL included), and within the block
    SIGTERM raises ``SystemExit(143)`` (:func:`sigterm_as_exit`) so the block's cleanup
    runs: the Dask cluster closed, logs flushed, the server stopped.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if url:
        yield url
        return
    from flows.temporary_server import TemporaryServer

    server = TemporaryServer(port=free_port())
    # Code that asks for "the" ephemeral server (None key) must find this one, not start
    # a second (the same trick as prefect.testing.utilities.prefect_test_harness).
    prior = TemporaryServer._instances.get(None)
    TemporaryServer._instances[None] = server
    # The clients (this process, the Dask workers it starts) send no usage events either.
    saved = {k: os.environ.get(k) for k in TELEMETRY_OFF}
    os.environ.update(TELEMETRY_OFF)
    try:
        with sigterm_as_exit():
            server.start(timeout=int(timeout))
            os.environ["PREFECT_API_URL"] = server.api_url
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                try:
                    yield server.api_url
                finally:
                    drain_prefect_workers()  # logs and events reach the API before it stops
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
        if prior is not None:
            TemporaryServer._instances[None] = prior
        else:
            TemporaryServer._instances.pop(None, None)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` in the main thread.

    Python's default SIGTERM action ends the process at once, skipping every ``finally``;
    an exception runs them (a temporary server stopped, a Dask cluster closed). A second
    SIGTERM during that cleanup ends the process at once. Nothing changes outside the main
    thread or where a SIGTERM handler is already installed (e.g. a Prefect worker's).
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def exit_on_sigterm(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
