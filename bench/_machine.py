"""Machine description recorded with every benchmark result.

``machine_info()`` returns host name, CPU model and vector features, core counts, RAM, OS,
Python and library versions (the peers' included), the GPU (via torch, if CUDA is
available), the load average when it was called, and the git commit and dirty flag of the
code that ran (:func:`git_state`). Only standard-library calls and already-installed
packages are used; missing pieces are reported as ``None``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Library versions recorded with every result: ptyflow's stack and the peers it is compared with.
PACKAGES = ("numpy", "zarr", "h5py", "xarray", "dask", "torch", "scipy", "prefect",
            "pty-chi", "ptyrad", "ptylab")  # fmt: skip


def git_state() -> dict:
    """``{"commit": sha, "dirty": bool}`` of this checkout (``None`` where git cannot tell).

    ``dirty`` counts changed tracked files outside ``bench/results`` and untracked Python
    files (a new module the run imported): a result written from uncommitted code is
    marked, and ``bench report`` labels it. A copy of the tree without
    its own history (a GPU machine's copy, whose ``.git`` was the session's starting state)
    reads both from ``PTYFLOW_GIT_COMMIT`` and ``PTYFLOW_GIT_DIRTY`` ("0"/"1") when set, by
    whoever sent the copy; ``source`` then says "env".
    """

    def git(*args):
        try:
            r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                               timeout=30)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    if os.environ.get("PTYFLOW_GIT_COMMIT"):  # the sender of a copied tree knows best
        return {"commit": os.environ["PTYFLOW_GIT_COMMIT"],
                "dirty": os.environ.get("PTYFLOW_GIT_DIRTY", "1") != "0", "source": "env"}
    # results being written (bench/results) are not code: they do not make a run dirty
    status = git("status", "--porcelain", "--untracked-files=all", "--", ".",
                 ":(exclude)bench/results")  # fmt: skip
    # tracked changes, and untracked Python (a new module the run imported is not in the
    # commit); other untracked files (stores, notes) are not code
    lines = None if status is None else [
        ln for ln in status.splitlines() if not ln.startswith("??") or ln.endswith(".py")]
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": bool(lines) if lines is not None else None}  # fmt: skip


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


#: CPU features that change what a run computes or how fast: the vector width and native
#: bfloat16 products (``hidden_precision="auto"`` uses bfloat16 only where they exist, so two
#: hosts both named "AMD EPYC" can run RNF at different precisions).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def _cpu_simd() -> list[str] | None:
    try:
        from ptytasks.fields.phasor_kernels import cpu_flags
    except ImportError:
        return None
    flags = cpu_flags()
    return [f for f in SIMD_FLAGS if f in flags] if flags else None


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _gpu() -> list[dict] | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return [
            {"name": torch.cuda.get_device_name(i),
             "memory_bytes": torch.cuda.get_device_properties(i).total_memory}
            for i in range(torch.cuda.device_count())
        ]  # fmt: skip
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not break a benchmark
        return None


def machine_info(packages=PACKAGES) -> dict:
    """A JSON-able description of this machine and software stack."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "hostname": socket.gethostname(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_simd": _cpu_simd(),
        "cores_logical": os.cpu_count(),
        "cores_available": affinity,
        "ram_bytes": _ram_bytes(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {p: _version(p) for p in packages},
        "gpu": _gpu(),
        "load_average": list(os.getloadavg()),
        "git": git_state(),
    }


def host_tag() -> str:
    """A file-name-safe short host name."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40]
