"""Peer reconstruction packages, each run in its own process.

Peers: pty-chi (``ptychi``: ePIE, rPIE, LSQML, Autodiff) and PtyRAD (``ptyrad``: its
automatic-differentiation solver). They are optional (``bench/install_peers.sh``); a peer
that is not installed, or fails to import, is reported as skipped.

Every peer run is a fresh subprocess (``bench/peers/runner.py``) with the same torch thread
count as the ptyflow engines, so one package's import side effects (default dtype, default
device, global RNG, OpenMP state) never touch another's, and import time is excluded from
every reported time. The interpreter is ``$PTYFLOW_PEERS_PYTHON``, else
``bench/.peers-venv/bin/python`` when that venv exists, else this interpreter.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNNER = HERE / "runner.py"
PEERS_VENV = ROOT / "bench" / ".peers-venv"

# benchmark engine name -> (peer package, engine inside it, modalities it handles)
PEER_ENGINES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ptychi-epie": ("ptychi", "epie", ("farfield", "nearfield")),
    "ptychi-rpie": ("ptychi", "rpie", ("farfield", "nearfield")),
    "ptychi-lsqml": ("ptychi", "lsqml", ("farfield", "nearfield")),
    "ptychi-autodiff": ("ptychi", "autodiff", ("farfield", "nearfield")),
    "ptyrad": ("ptyrad", "ad", ("farfield",)),
}


def peer_python() -> str:
    env = os.environ.get("PTYFLOW_PEERS_PYTHON")
    if env:
        return env
    venv_py = PEERS_VENV / "bin" / "python"
    if venv_py.exists():
        return str(venv_py)
    return sys.executable


@functools.lru_cache(maxsize=4)
def probe(python: str | None = None) -> dict:
    """Which peers import in ``python`` (versions, import seconds, errors)."""
    py = python or peer_python()
    try:
        out = subprocess.run(
            [py, str(RUNNER), "--probe"], capture_output=True, text=True, timeout=300, cwd=str(ROOT)
        )
        if out.returncode != 0:
            return {"python": py, "error": out.stderr[-2000:], "peers": {}}
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        return {"python": py, "error": f"{type(exc).__name__}: {exc}", "peers": {}}
    info["interpreter"] = py
    return info


def available(python: str | None = None) -> dict[str, bool]:
    """``{peer engine name: importable}``."""
    peers = probe(python).get("peers", {})
    return {name: bool(peers.get(pkg, {}).get("ok")) for name, (pkg, _, _) in PEER_ENGINES.items()}


def supports(name: str, modality: str) -> bool:
    return modality in PEER_ENGINES[name][2]


def run_peer(
    name: str, job: dict, arrays: dict, *, timeout: float = 3600, python: str | None = None
) -> dict:
    """Run peer engine ``name`` on ``arrays`` in a subprocess; returns its result.

    ``job``: ``epochs``, ``object_shape``, ``threads``, ``device``, ``seed``,
    ``snapshot_epochs``, ``learn_probe``, ``learn_positions``, ``modality``, ``far_field``
    (FFT to the detector, else near-field propagation), ``settings`` (peer-specific
    overrides). Returns ``ok``, ``object``, ``probe``, ``positions_px`` (window corners, where
    the peer reports them), ``snapshots`` (``{epoch: object}``),
    ``epoch_times``, ``setup_s``, ``import_s``, ``wall_s`` (the whole subprocess), ``error``.
    """
    pkg, engine, _ = PEER_ENGINES[name]
    job = {**job, "peer": pkg, "engine": engine}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        d = Path(tmp)
        (d / "job.json").write_text(json.dumps(job, default=_json_default))
        np.savez(d / "arrays.npz", **{k: v for k, v in arrays.items() if v is not None})
        env = dict(os.environ)
        threads = str(int(job.get("threads") or 1))
        env.update(
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            MPLBACKEND="Agg",
            PYTHONWARNINGS="ignore",
        )
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [python or peer_python(), str(RUNNER), str(d)],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=str(d),
                env=env,
            )
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired:
            rc, tail = -1, f"timed out after {timeout:.0f} s"
        except OSError as exc:  # the interpreter is missing or not executable
            rc, tail = -1, f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - t0
        info_path = d / "result.json"
        info = (
            json.loads(info_path.read_text())
            if info_path.exists()
            else {"ok": False, "error": f"runner exited {rc} without a result: {tail}"}
        )
        info["wall_s"] = wall
        if info.get("ok"):
            with np.load(d / "result.npz") as z:
                info["object"] = z["object"]
                info["probe"] = z["probe"] if "probe" in z.files else None
                if "positions_px" in z.files:
                    info["positions_px"] = z["positions_px"]
                eps = [int(e) for e in z["snapshot_epochs"]]
                info["snapshots"] = {e: z["snapshots"][i] for i, e in enumerate(eps)} if eps else {}
        else:
            info.setdefault("log_tail", tail if rc else "")
    return info


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o)}")
