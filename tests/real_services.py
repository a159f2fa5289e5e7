"""Real infrastructure for tests: a throwaway PostgreSQL cluster and a Dask scheduler with
workers started as separate processes, the way a facility (or dask-jobqueue) runs them.

Every process is started in a process group of its own and ended by its PID in
``finally``; nothing here binds anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from flows.serve import REPO_ROOT, free_port, stop_process

# ----------------------------------------------------------------------------- PostgreSQL
PG_TOOLS = ("initdb", "pg_ctl", "createdb", "psql")


def postgres_bin() -> Path | None:
    """Folder holding PostgreSQL's ``initdb``, ``pg_ctl``, ``createdb`` and ``psql``: the
    one ``initdb`` on PATH links to, else the newest ``/usr/lib/postgresql/<version>/bin``
    (Debian and Ubuntu keep them off PATH); None when there is none."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: [int(x) for x in re.findall(r"\d+", p)])  # fmt: skip
    candidates += [Path(d) for d in reversed(versions)]
    for d in candidates:
        if all((d / tool).exists() for tool in PG_TOOLS):
            return d
    return None


def _unprivileged_account() -> str | None:
    """The account to run PostgreSQL as when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' account for initdb")


@contextlib.contextmanager
def postgres_cluster(bin_dir: Path, *, user: str = "prefect",
                     database: str = "prefect") -> Iterator[dict]:  # fmt: skip
    """A fresh PostgreSQL cluster on 127.0.0.1 at a free port, removed afterwards.

    Yields ``{"url", "password", "port", "psql", "log"}``: ``url`` is the SQLAlchemy URL
    ``postgresql+asyncpg://user:password@127.0.0.1:port/database`` (password
    authentication over TCP, as at a facility); ``psql(sql)`` runs one statement over the
    cluster's Unix socket and returns its unaligned output. Stopped with ``pg_ctl stop -m
    immediate`` (and the postmaster killed if that fails) even when the body raises.
    """
    account = _unprivileged_account()
    as_user = ["runuser", "-u", account, "--"] if account else []
    # Under /tmp, not pytest's tmp_path: that is root-only (0700), the account could not
    # reach it; a short path also keeps the Unix socket name under its 107-byte limit.
    base = Path(tempfile.mkdtemp(prefix="ptyflow-pg-"))
    data, log, pwfile = base / "data", base / "postgres.log", base / "pw"
    password = secrets.token_hex(8)
    pwfile.write_text(password + "\n")
    if account:
        ent = pwd.getpwnam(account)
        for p in (base, pwfile):
            os.chown(p, ent.pw_uid, ent.pw_gid)
    port = free_port()

    def run(args: list[str], timeout: float = 120) -> str:
        res = subprocess.run([*as_user, *args], cwd=base, capture_output=True, text=True,
                             timeout=timeout)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({res.returncode}):\n"
                f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}" + _tail(log)
            )
        return res.stdout

    started = False
    try:
        # Trust on the Unix socket (only this account can reach the 0700 folder), a
        # password over TCP: the server connects like a facility's would.
        run([str(bin_dir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C", "--no-sync"])  # fmt: skip
        opts = (
            f"-k {base} -p {port} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )  # throwaway data: no durability
        started = True
        run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", opts, "start"])  # fmt: skip
        run([str(bin_dir / "createdb"), "-h", str(base), "-p", str(port), "-U", user, database])

        def psql(sql: str) -> str:
            args = [str(bin_dir / "psql"), "-h", str(base), "-p", str(port), "-U", user,
                    "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]  # fmt: skip
            return run(args).strip()

        yield {"url": f"postgresql+asyncpg://{user}:{password}@127.0.0.1:{port}/{database}",
               "password": password, "port": port, "psql": psql, "log": log}  # fmt: skip
    finally:
        if started:
            with contextlib.suppress(Exception):
                run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], 60)
            _kill_postmaster(data)
        shutil.rmtree(base, ignore_errors=True)


def _kill_postmaster(data: Path) -> None:
    """SIGKILL the postmaster named in ``postmaster.pid`` if it is still there."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 9)


def _tail(log: Path, n: int = 2000) -> str:
    if not log.exists():
        return ""
    return "\n--- log tail ---\n" + log.read_text(errors="replace")[-n:]


# ----------------------------------------------------------------------------- Dask
def _popen(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "ab") as out:
        # A process group of its own: stop_process ends the nanny with its worker.
        return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


@contextlib.contextmanager
def dask_cluster(logdir: Path, n_workers: int = 2, timeout: float = 120) -> Iterator[dict]:
    """``dask scheduler`` and ``n_workers`` ``dask worker --resources GPU=1`` processes.

    Each worker is its own command (a nanny and one single-threaded worker), started as
    dask-jobqueue's job scripts start them on a batch node (``python -m
    distributed.cli.dask_worker``, the module behind ``dask worker``), with a fixed
    ``--worker-port`` so a test can tell which process holds which worker address.

    Yields ``{"address", "scheduler", "workers"}``: ``workers`` maps each worker address
    to its ``Popen`` (kill one's process group to lose a node). Waits until every worker
    has registered with the scheduler.
    """
    from distributed import Client

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    try:
        sched = _popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                        "127.0.0.1", "--port", str(port), "--dashboard-address",
                        "127.0.0.1:0"], logdir / "scheduler.log", env)  # fmt: skip
        procs.append(sched)
        workers = {}
        for i in range(n_workers):
            wport = free_port()
            w = _popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                        "--host", "127.0.0.1", "--worker-port", str(wport), "--nthreads", "1",
                        "--nworkers", "1", "--resources", "GPU=1", "--name", f"gpu{i}",
                        "--dashboard-address", "127.0.0.1:0"],
                       logdir / f"worker{i}.log", env)  # fmt: skip
            procs.append(w)
            workers[f"tcp://127.0.0.1:{wport}"] = w
        t0 = time.monotonic()
        while True:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"dask process {p.args[2]} exited ({p.returncode})"
                        + "".join(_tail(f) for f in logdir.glob("*.log"))
                    )
            try:
                with Client(address, timeout=5) as c:
                    if set(c.scheduler_info(n_workers=-1)["workers"]) >= set(workers):
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(
                    f"dask workers not registered after {timeout:.0f} s"
                    + "".join(_tail(f) for f in logdir.glob("*.log"))
                )
            time.sleep(1)
        yield {"address": address, "scheduler": sched, "workers": workers}
    finally:
        for p in reversed(procs):
            stop_process(p, timeout=10)
