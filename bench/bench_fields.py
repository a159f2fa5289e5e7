"""Throughput of the neural-field building blocks: forward + backward, coordinates per second.

Compares, on full pixel grids (256^2 and 512^2 by default), at the paper's defaults
(L=16, F=2, T=2^19, N_min=16, b=1.5; 64 complex neurons, phasor):

* ``naive``: a straightforward implementation measured in the same run: every level hashed
  (no dense levels), per-corner advanced-index gathers with autograd, and a complex-dtype
  MLP with ``torch.exp(1j * w * z)``;
* ``points``: :class:`HashEncoding2D` generic path (arbitrary coordinates);
* ``grid``: its full-grid fast path ``encode_pixels``, with the paper's 16 levels
  (``level_policy="paper"``) and with the default ``"cap"`` policy;
* the MLP alone: complex dtype vs our split real arithmetic (unchunked / chunked);
* the whole :class:`ResidualField` (encoding + MLP + prior), paper levels and default.

Usage::

    python bench/bench_fields.py                      # CPU, writes bench/results/fields-<host>.json
    python bench/bench_fields.py --device cuda --sizes 512 1024 2048
    python bench/bench_fields.py --threads 1 --reps 3

Timings are wall-clock medians (CUDA synchronised); process CPU time is recorded too, since
on a shared machine wall time also measures the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptytasks.fields import HashEncoding2D, HashEncodingConfig, ResidualField  # noqa: E402
from ptytasks.fields.complex_layers import ComplexMLP  # noqa: E402
from ptytasks.fields.hash_encoding import PRIME_Y, level_resolutions  # noqa: E402


# ---------------------------------------------------------------------------- baselines
class NaiveHashEncoding(torch.nn.Module):
    """All levels hashed into ``(T, F)`` tables; per-corner gathers; autograd backward."""

    def __init__(self, cfg: HashEncodingConfig, seed: int = 0):
        super().__init__()
        self.res = level_resolutions(cfg)
        self.t = 2**cfg.log2_table_size
        g = torch.Generator().manual_seed(seed)
        self.tables = torch.nn.ParameterList(
            torch.nn.Parameter((torch.rand(self.t, cfg.n_features, generator=g) * 2 - 1) * 1e-4)
            for _ in self.res
        )

    def forward(self, coords):  # (P, 2) unit -> (P, L F)
        feats = []
        for n, table in zip(self.res, self.tables, strict=True):
            pos = coords * n
            i0 = pos.floor().clamp(max=n - 1)
            w = pos - i0
            i0 = i0.long()
            acc = 0
            for dy in (0, 1):
                for dx in (0, 1):
                    yi, xi = i0[:, 0] + dy, i0[:, 1] + dx
                    idx = (xi ^ (yi * PRIME_Y)) % self.t
                    wy = w[:, 0] if dy else 1 - w[:, 0]
                    wx = w[:, 1] if dx else 1 - w[:, 1]
                    acc = acc + table[idx] * (wy * wx)[:, None]
            feats.append(acc)
        return torch.cat(feats, -1)


class ComplexDtypeMLP(torch.nn.Module):
    """The same MLP with complex64 parameters and ``torch.exp(1j * w * z)`` (row major)."""

    def __init__(self, ours: ComplexMLP):
        super().__init__()

        def cplx(layer):
            return (
                torch.nn.Parameter(torch.complex(layer.weight_re, layer.weight_im).detach()),
                torch.nn.Parameter(torch.complex(layer.bias_re, layer.bias_im).detach()),
            )

        self.ws = torch.nn.ParameterList()
        self.omegas = [float(a.omega) for a in ours.acts]
        for layer in [*ours.layers, ours.out]:
            w, b = cplx(layer)
            self.ws.extend([w, b])

    def forward(self, feats):  # (P, D) real -> (P, out) complex
        h = feats.to(torch.complex64)
        n = len(self.ws) // 2
        for i in range(n):
            h = h @ self.ws[2 * i].T + self.ws[2 * i + 1]
            if i < n - 1:
                h = torch.exp(1j * self.omegas[i] * h)
        return h


# ---------------------------------------------------------------------------- timing
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, reps: int, budget_s: float = 20.0) -> dict:
    """Median wall / CPU seconds of ``fn()`` after one warm-up call (fewer reps if slow)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    reps = max(1, min(reps, int(budget_s / max(first, 1e-6))))
    walls, cpus = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        sync(device)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {
        "wall_s": statistics.median(walls),
        "wall_min_s": min(walls),
        "cpu_s": statistics.median(cpus),
        "reps": reps,
    }


def bench_size(n: int, device, reps: int, skip_naive: bool) -> list[dict]:
    shape = (n, n)
    p = n * n
    rows = []
    unit = torch.arange(n, device=device, dtype=torch.float32) / (n - 1)
    coords = torch.stack(torch.meshgrid(unit, unit, indexing="ij"), -1).reshape(-1, 2)
    prior = torch.ones(shape, dtype=torch.complex64, device=device)

    def add(name, what, fn, **extra):
        r = measure(fn, device, reps)
        r.update(
            name=name,
            what=what,
            grid=n,
            coords=p,
            coords_per_s=p / r["wall_s"],
            coords_per_cpu_s=p / max(r["cpu_s"], 1e-9),
            **extra,
        )
        rows.append(r)
        print(
            f"  {n:5d}^2 {what:9s} {name:28s} {r['wall_s'] * 1e3:9.1f} ms "
            f"{r['coords_per_s'] / 1e6:8.3f} Mcoord/s  (cpu {r['cpu_s'] * 1e3:8.1f} ms)",
            flush=True,
        )

    paper = HashEncodingConfig(level_policy="paper")
    enc_paper = HashEncoding2D(paper, shape, seed=0).to(device)
    enc_cap = HashEncoding2D(HashEncodingConfig(), shape, seed=0).to(device)
    mlp = ComplexMLP(32, 1, seed=1, out_init_scale=1.0).to(device)
    cmlp = ComplexDtypeMLP(mlp).to(device)
    feats = (torch.rand(32, p, device=device) * 0.1).requires_grad_(True)

    def back_real(y):
        y.square().sum().backward()

    def back_cplx(z):
        (z.real.square() + z.imag.square()).sum().backward()

    # --- encoding alone
    if not skip_naive:
        naive = NaiveHashEncoding(paper).to(device)
        add("naive_all_hashed", "encoding", lambda: back_real(naive(coords)), levels=16)
    add("points_paper", "encoding", lambda: back_real(enc_paper(coords)), levels=16)
    add("grid_paper", "encoding", lambda: back_real(enc_paper.encode_pixels()), levels=16)
    add(
        "grid_cap",
        "encoding",
        lambda: back_real(enc_cap.encode_pixels()),
        levels=len(enc_cap.resolutions),
    )
    # --- MLP alone (32 real features -> 64 -> 64 -> 1 complex)
    add("complex_dtype", "mlp", lambda: back_cplx(cmlp(feats.T)))
    add("split_real", "mlp", lambda: back_real(mlp.forward_split(feats)))
    if device.type == "cpu":
        add("split_real_chunk16384", "mlp", lambda: back_real(mlp.forward_split(feats, 16384)))
    # --- whole field
    if not skip_naive:
        add("naive", "field", lambda: back_cplx(cmlp(naive(coords)) + 1), levels=16)
    f_paper = ResidualField(shape, prior, encoding=paper).to(device)
    f_cap = ResidualField(shape, prior).to(device)
    add("residual_field_paper_levels", "field", lambda: back_cplx(f_paper()), levels=16)
    add(
        "residual_field_default",
        "field",
        lambda: back_cplx(f_cap()),
        levels=len(f_cap.encoding.resolutions),
    )
    return rows


def machine_info(device) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "hostname": socket.gethostname(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    info = machine_info(device)
    print(json.dumps(info), flush=True)
    rows = []
    t0 = time.perf_counter()
    for n in args.sizes:
        rows += bench_size(n, device, args.reps, args.skip_naive)
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["bench_seconds"] = time.perf_counter() - t0
    out = args.out or (Path(__file__).parent / "results" / f"fields-{info['hostname']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "results": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
