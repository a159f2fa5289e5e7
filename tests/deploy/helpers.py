"""Helpers of the deployment tests: tiny datasets and parameters, running flows in this
process against a given Prefect API."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

# ``ptyflow`` as an operator runs it (the installed console script may be absent in a checkout)
CLI = [sys.executable, "-c", "from flows.cli import app; app()"]


def tiny_farfield(path: Path, seed: int = 1) -> Path:
    """A 30-frame 32x32 far-field dataset with its probe (seconds to reconstruct)."""
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    write_cxi(path, simulate("farfield", seed=seed, frame_size=32, n_positions=30,
                             known_probe=True))  # fmt: skip
    return path


def tiny_params(input_path, store, **over) -> dict:
    """Pipeline parameters of a fast run: two tiles, 5 rPIE iterations, in-process."""
    p = {"input": str(input_path), "store": str(store), "tiling": {"grid": [2, 1]},
         "engine": {"engine": "rpie", "epochs": 5, "learn_probe": False},
         "cluster": {"kind": "none"}}  # fmt: skip
    p.update(over)
    return p


def start_cli_server(home: Path, env: dict, log: Path, timeout: float,
                     *extra: str) -> tuple[subprocess.Popen, str]:
    """``ptyflow server start --port N --home HOME --no-ui EXTRA...`` on a free port, healthy;
    returns ``(process, api_url)``. Its output goes to ``log``, rewritten per try, where
    :func:`flows.serve.healthy_on_a_free_port` reads a port taken before the bind."""
    from flows.serve import healthy_on_a_free_port

    def launch(port: int) -> subprocess.Popen:
        with open(log, "wb") as f:
            return subprocess.Popen([*CLI, "server", "start", "--port", str(port), "--home",
                                     str(home), "--no-ui", *extra], env=env, stdout=f,
                                    stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    return healthy_on_a_free_port(launch, log=log, timeout=timeout)


@contextlib.contextmanager
def using_api(url: str):
    """Run flows in this process against the server at ``url``."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import drain_prefect_workers

    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield
            finally:
                drain_prefect_workers()  # this process's logs reach the server now
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old
