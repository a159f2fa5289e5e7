"""Throughput of the neural-field building blocks: forward + backward, coordinates per second.

Compares, on full pixel grids (256^2 and 512^2 by default), at the paper's defaults
(L=16, F=2, T=2^19, N_min=16, b=1.5; 64 complex neurons, phasor):

* ``naive``: a straightforward implementation measured in the same run: every level hashed
  (no dense levels), per-corner advanced-index gathers with autograd, and a complex-dtype
  MLP with ``torch.exp(1j * w * z)``;
* ``points``: :class:`HashEncoding2D` generic path (arbitrary coordinates);
* ``grid``: its full-grid fast path ``encode_pixels``, with the paper's 16 levels
  (``level_policy="paper"``) and with the default ``"cap"`` policy;
* the MLP alone: complex dtype vs our split real arithmetic through layer-by-layer
  autograd (``split_real*``, the reference) vs the one-function phasor MLP (``fused*``,
  the default), unchunked and in 16384 (old CPU default) / 2048 (new) point chunks;
* the whole :class:`ResidualField` (encoding + MLP + prior), paper levels and default, and
  the default with the reference kernels (``residual_field_reference``);
* one AdamW step over the paper-level field's 15 M parameters: ``foreach`` vs ``fused``.

``speedups`` in the JSON are the same-run ratios of median wall times (before / after).

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

from bench._machine import git_state  # noqa: E402
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


def measure_interleaved(fns, device, reps: int, budget_s: float = 20.0) -> list[dict]:
    """Median wall / CPU seconds of each ``fn()``, one call of each per round after one
    warm-up call each; a function slower than ``budget_s / reps`` gets fewer rounds."""
    n_reps = []
    for fn in fns:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        n_reps.append(max(1, min(reps, int(budget_s / max(time.perf_counter() - t0, 1e-6)))))
    walls = [[] for _ in fns]
    cpus = [[] for _ in fns]
    for rnd in range(max(n_reps)):
        for i, fn in enumerate(fns):
            if rnd >= n_reps[i]:
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            sync(device)
            walls[i].append(time.perf_counter() - t0)
            cpus[i].append(time.process_time() - c0)
    return [
        {"wall_s": statistics.median(w), "wall_min_s": min(w), "cpu_s": statistics.median(c),
         "reps": len(w)}
        for w, c in zip(walls, cpus, strict=True)
    ]


def bench_size(n: int, device, reps: int, skip_naive: bool) -> list[dict]:
    shape = (n, n)
    p = n * n
    rows = []
    unit = torch.arange(n, device=device, dtype=torch.float32) / (n - 1)
    coords = torch.stack(torch.meshgrid(unit, unit, indexing="ij"), -1).reshape(-1, 2)
    prior = torch.ones(shape, dtype=torch.complex64, device=device)

    specs = []

    def add(name, what, fn, **extra):
        specs.append((name, what, fn, extra))

    paper = HashEncodingConfig(level_policy="paper")
    enc_paper = HashEncoding2D(paper, shape, seed=0).to(device)
    enc_cap = HashEncoding2D(HashEncodingConfig(), shape, seed=0).to(device)
    mlp = ComplexMLP(32, 1, seed=1, out_init_scale=1.0).to(device)
    mlp_ref = ComplexMLP(32, 1, seed=1, out_init_scale=1.0, fused=False).to(device)
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
    # split_real*: layer-by-layer autograd (MLPConfig.fused=False, the reference);
    # fused*: the one-function phasor MLP (ptytasks/fields/fused_mlp.py, the default)
    add("complex_dtype", "mlp", lambda: back_cplx(cmlp(feats.T)))
    add("split_real", "mlp", lambda: back_real(mlp_ref.forward_split(feats)))
    add("fused", "mlp", lambda: back_real(mlp.forward_split(feats)))
    if device.type == "cpu":
        add("split_real_chunk16384", "mlp",
            lambda: back_real(mlp_ref.forward_split(feats, 16384)))
        add("split_real_chunk2048", "mlp", lambda: back_real(mlp_ref.forward_split(feats, 2048)))
        add("fused_chunk2048", "mlp", lambda: back_real(mlp.forward_split(feats, 2048)))
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
    # the same field with the kernels before the speed work (autograd MLP, 16384 chunks)
    f_ref = ResidualField(shape, prior, mlp={"fused": False},
                          chunk_size=16384 if device.type == "cpu" else None).to(device)
    add("residual_field_reference", "field", lambda: back_cplx(f_ref()),
        levels=len(f_ref.encoding.resolutions))
    # --- one AdamW step over the paper-level field's parameters (15 M at 512^2, mostly
    # the 2^19-row hashed tables): foreach (reference) vs fused (the RNF engine's default)
    n_params = sum(q.numel() for q in f_paper.parameters())
    for kind in ("foreach", "fused"):
        ps = [torch.nn.Parameter(q.detach().clone()) for q in f_paper.parameters()]
        for q in ps:
            q.grad = torch.randn_like(q) * 1e-3
        try:
            opt = torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-5, **{kind: True})
        except RuntimeError as e:  # no fused kernel on this device
            print(f"  skip adamw_{kind}: {e}")
            continue
        add(f"adamw_{kind}", "optimizer", opt.step, params=n_params, levels=16)
    # measured round-robin (every variant once per round), so that a change in the load
    # of a shared machine hits baselines and candidates alike
    stats = measure_interleaved([fn for _, _, fn, _ in specs], device, reps)
    for (name, what, _, extra), r in zip(specs, stats, strict=True):
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
    return rows


def ratios(rows: list[dict]) -> dict:
    """Same-run before/after ratios of median wall and CPU time, per grid size."""
    pairs = {
        "mlp_fused_vs_autograd_unchunked": ("split_real", "fused"),
        "mlp_cpu_default_new_vs_old": ("split_real_chunk16384", "fused_chunk2048"),
        "mlp_chunk2048_vs_16384_autograd": ("split_real_chunk16384", "split_real_chunk2048"),
        "field_default_vs_reference": ("residual_field_reference", "residual_field_default"),
        "field_default_vs_naive": ("naive", "residual_field_default"),
        "encoding_grid_cap_vs_naive": ("naive_all_hashed", "grid_cap"),
        "adamw_fused_vs_foreach": ("adamw_foreach", "adamw_fused"),
    }
    out = {}
    for grid in sorted({r["grid"] for r in rows}):
        by = {r["name"]: r for r in rows if r["grid"] == grid}
        for key, (before, after) in pairs.items():
            if before in by and after in by:
                out[f"{grid}:{key}"] = {
                    "wall": by[before]["wall_s"] / by[after]["wall_s"],
                    "cpu": by[before]["cpu_s"] / max(by[after]["cpu_s"], 1e-9),
                }
    return out


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
        "git": git_state(),  # the commit and dirty flag every benchmark record carries
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
    speedups = ratios(rows)
    for k, v in speedups.items():
        print(f"  {k:45s} wall x{v['wall']:.2f}  cpu x{v['cpu']:.2f}")
    out.write_text(json.dumps({"machine": info, "speedups": speedups, "results": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
