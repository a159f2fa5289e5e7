"""Entry point of a peer engine's own process: ``python bench/peers/runner.py JOB_DIR``.

``JOB_DIR/job.json`` names the peer and engine, epochs, threads, device and settings;
``JOB_DIR/arrays.npz`` holds ``frames`` (centred), ``positions_px`` (window corners),
``probe`` (unitary-FFT scale) and optionally ``object_init``. The runner writes
``result.npz`` (``object``, ``probe``, ``snapshots`` with ``snapshot_epochs``) and
``result.json`` (timings, losses, versions, what the import shim did, or the error).

Timing: ``import_s`` is the peer package's import (excluded from every reported time),
``setup_s`` the peer's own setup (task/model building), ``epoch_times`` the epochs alone
(snapshots are copied outside the timed region). ``--probe`` only imports the peers and
prints their versions as JSON (used to decide which peers are available).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEERS = ("ptychi", "ptyrad")


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def probe_peers() -> dict:
    from bench.peers import _shim

    out = {"shim": _shim.install(), "python": sys.version.split()[0], "peers": {}}
    import torch

    out["torch"] = torch.__version__
    for pkg, mod in (("ptychi", "ptychi.api.task"), ("ptyrad", "ptyrad.solver")):
        t0 = time.perf_counter()
        try:
            __import__(mod)
            out["peers"][pkg] = {
                "ok": True,
                "version": _version(pkg),
                "import_s": time.perf_counter() - t0,
            }
        except Exception as exc:  # noqa: BLE001 - reported, the peer is then skipped
            out["peers"][pkg] = {
                "ok": False,
                "version": _version(pkg),
                "error": f"{type(exc).__name__}: {exc}",
            }
    return out


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--probe":
        print(json.dumps(probe_peers()))
        return 0
    job_dir = Path(argv[0])
    job = json.loads((job_dir / "job.json").read_text())
    threads = int(job.get("threads") or 1)
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from bench.peers import _shim

    shim = _shim.install()
    info: dict = {
        "peer": job["peer"],
        "engine": job["engine"],
        "threads": threads,
        "shim": shim,
        "torch": torch.__version__,
        "version": _version(job["peer"]),
    }
    snaps: dict[int, np.ndarray] = {}
    snap_t: dict[int, float] = {}

    def snapshot(epoch, obj, seconds):
        snaps[int(epoch)] = np.asarray(obj, np.complex64).copy()
        snap_t[int(epoch)] = float(seconds)

    try:
        t0 = time.perf_counter()
        if job["peer"] == "ptychi":
            import ptychi.api.task  # noqa: F401

            from bench.peers import ptychi_engine as eng
        elif job["peer"] == "ptyrad":
            import ptyrad.solver  # noqa: F401

            from bench.peers import ptyrad_engine as eng
        else:
            raise ValueError(f"unknown peer {job['peer']!r}")
        info["import_s"] = time.perf_counter() - t0
        with np.load(job_dir / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
        t0 = time.perf_counter()
        res = eng.run(job, arrays, snapshot)
        info["total_s"] = time.perf_counter() - t0
        for k in ("epoch_times", "loss_history", "setup_s", "settings", "notes"):
            if k in res:
                info[k] = res[k]
        epochs = sorted(snaps)
        out = {"object": res["object"], "snapshot_epochs": np.asarray(epochs, np.int64)}
        for k in ("probe", "positions_px"):
            if res.get(k) is not None:
                out[k] = res[k]
        if epochs:
            out["snapshots"] = np.stack([snaps[e] for e in epochs])
            info["snapshot_seconds"] = [snap_t[e] for e in epochs]
        np.savez(job_dir / "result.npz", **out)
        info["ok"] = True
    except Exception as exc:  # noqa: BLE001 - the harness reports the failure per engine
        info["ok"] = False
        info["error"] = f"{type(exc).__name__}: {exc}"
        info["traceback"] = traceback.format_exc()[-4000:]
    (job_dir / "result.json").write_text(json.dumps(info, default=float))
    return 0 if info["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
