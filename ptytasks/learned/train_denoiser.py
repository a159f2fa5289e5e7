"""Train the PINE denoiser: RealSN-DnCNN on formula-driven dead-leaves images.

Usage::

    python -m ptytasks.learned.train_denoiser --out weights.pt            # CPU default
    python -m ptytasks.learned.train_denoiser --paper --device cuda --out paper.pt

Writes ``<out>.pt`` (config + float32 weights, :func:`~ptytasks.learned.dncnn.save_denoiser`)
and ``<out>.json``: the command, seed, configuration, timings, the validation PSNR before
and after denoising (synthetic and bundled natural images, sigma = 15/255) and the
Lipschitz numbers (the certified per-layer bound on ``R`` and empirical ratios of ``R``
and ``D = Id - R`` on random pairs and near natural images).

The loss is the paper's ``||Y - (X - R(X))||^2`` (mean over pixels), Adam with a cosine
learning-rate decay, and RealSN normalisation after every step. The weights kept are those
of the logged step with the lowest error on a held-out synthetic set (separate from the
reported validation sets); a small learning rate (1e-4) matters: at 1e-3 the normalised
network peaked within ~100 steps and then degraded to no better than the identity.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ptytasks.learned.dncnn import (
    DnCNN,
    DnCNNConfig,
    RealSN,
    finalize_lipschitz,
    jacobian_norm,
    layer_norms,
    pair_ratios,
    save_denoiser,
)
from ptytasks.learned.synthetic import SIGMA, DenoisingStream, add_noise, synthetic_images

NATURAL = ("camera", "moon", "coins", "brick", "cell", "page")


@dataclass
class TrainConfig:
    """Training settings (the defaults are the CPU-sized run of the committed weights).

    The paper's run: ``depth=17, features=64``, ReLU, 1000 fixed 128x128 images
    (``pool=1000, refresh=0, patch=128``), 50 epochs, on a GPU (:meth:`paper`). The
    default here is smaller (DnCNN-8/32, streaming 48x48 patches) and uses MaxMin
    activations: under RealSN's per-layer bound a ReLU DnCNN stalled at +0.4 dB over the
    noisy input in 300 CPU steps, MaxMin reached +1 dB (see the module's JSON records).
    """

    depth: int = 8
    features: int = 32
    lipschitz: float = 1.0
    init: str = "dirac"
    bias_init: float = 0.0
    bias_lr: float = 1.0
    activation: str = "maxmin"
    steps: int = 600
    batch: int = 32
    patch: int = 48
    pool: int = 64
    refresh: int = 1
    signed: bool = False
    sigma: float = SIGMA
    lr: float = 1e-4
    lr_final: float = 1e-5
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    log_every: int = 50

    @classmethod
    def paper(cls, **kw) -> TrainConfig:
        """1000 fixed images, whole 128x128 images, 50 epochs of batch 16, DnCNN-17/64."""
        base = dict(depth=17, features=64, pool=1000, refresh=0, patch=128, batch=16,
                    steps=50 * 1000 // 16, signed=False, activation="relu")  # fmt: skip
        base.update(kw)
        return cls(**base)


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((x - ref) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def validation_images(seed: int, n_synthetic: int = 8, size: int = 128) -> dict[str, np.ndarray]:
    """Clean validation sets in ``[0, 1]``: held-out synthetic and bundled natural images."""
    from ptytasks.simulate.objects import image

    synth = synthetic_images(n_synthetic, size, seed=seed + 1_000_003)
    nat = np.stack([image(k, (size, size)) for k in NATURAL]).astype(np.float32)
    return {"synthetic": synth, "natural": nat}


@torch.no_grad()
def evaluate(model: DnCNN, sets: dict[str, np.ndarray], sigma: float, seed: int) -> dict:
    """Mean PSNR (dB) of the noisy and the denoised images per validation set."""
    model.eval()
    dev = next(model.parameters()).device
    out = {}
    for name, clean in sets.items():
        noisy = add_noise(clean, sigma, np.random.default_rng([seed, 7]))
        den = model.denoise(torch.from_numpy(noisy)[:, None].to(dev))[:, 0].cpu().numpy()
        for key, xs in (("noisy", noisy), ("denoised", den)):
            vals = [_psnr(a, b) for a, b in zip(xs, clean, strict=True)]
            out[f"{name}_psnr_{key}"] = float(np.mean(vals))
    return out


def lipschitz_report(model: DnCNN, natural: np.ndarray, sigma: float, seed: int = 0,
                     n_pairs: int = 32, size: int = 64) -> dict:
    """Certified and empirical Lipschitz numbers of ``R`` and ``D = Id - R``.

    ``random``: independent pairs of uniform-noise images, and pairs ``x, x + d`` with
    small Gaussian ``d``; ``natural``: noisy natural images and small perturbations of
    them (the local constant), plus ``||J_D||`` by power iteration at each image.
    """
    model = model.float().cpu().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(int(seed))
    x = torch.rand((n_pairs, 1, size, size), generator=g)
    y = torch.rand((n_pairs, 1, size, size), generator=g)
    near = x + 1e-2 * torch.randn(x.shape, generator=g)
    noisy = torch.from_numpy(add_noise(natural, sigma, np.random.default_rng([seed, 11])))[:, None]
    pert = noisy + 1e-2 * torch.randn(noisy.shape, generator=g)
    r, d = model, model.denoise
    ratios = {
        "R_random": torch.cat([pair_ratios(r, x, y), pair_ratios(r, x, near)]),
        "D_random": torch.cat([pair_ratios(d, x, y), pair_ratios(d, x, near)]),
        "R_natural": pair_ratios(r, noisy, pert),
        "D_natural": pair_ratios(d, noisy, pert),
    }
    jac = [jacobian_norm(d, noisy[i:i + 1], n_iter=25, seed=seed + i) for i in range(len(noisy))]
    norms = layer_norms(model, (size, size))
    out = {f"{k}_max": float(v.max()) for k, v in ratios.items()}
    out.update({
        "layer_norms": norms, "R_bound": float(math.prod(norms)),
        "D_jacobian_norm_natural": jac, "D_jacobian_norm_max": float(max(jac)),
    })  # fmt: skip
    return out


def train(cfg: TrainConfig, log=print) -> tuple[DnCNN, dict]:
    """Train a RealSN-DnCNN; returns the model (finalised Lipschitz scaling) and a report."""
    torch.manual_seed(cfg.seed)
    if cfg.device == "cpu" and cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dev = torch.device(cfg.device)
    model = DnCNN(DnCNNConfig(depth=cfg.depth, features=cfg.features,
                              lipschitz=cfg.lipschitz, init=cfg.init,
                              bias_init=cfg.bias_init,
                              activation=cfg.activation)).to(dev)  # fmt: skip
    model = model.to(memory_format=torch.channels_last)
    sn = RealSN(model, (cfg.patch, cfg.patch), n_iter=1, seed=cfg.seed)
    for _ in range(20):  # start inside the constraint set
        sn.normalize_()
    stream = DenoisingStream(cfg.batch, cfg.patch, pool=cfg.pool, refresh=cfg.refresh,
                             sigma=cfg.sigma, signed=cfg.signed, seed=cfg.seed)  # fmt: skip
    weights = [c.weight for c in model.convs]
    biases = [c.bias for c in model.convs if c.bias is not None]
    opt = torch.optim.Adam([{"params": weights, "lr": cfg.lr},
                            {"params": biases, "lr": cfg.lr * cfg.bias_lr}])  # fmt: skip
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.steps), cfg.lr_final)
    # Held-out selection set (not the reported validation set): the weights kept are those
    # of the logged step with the lowest selection error (the training loss drifts up late
    # in a run under the per-step projection).
    sel_clean = torch.from_numpy(synthetic_images(8, 64, seed=cfg.seed + 2_000_003))[:, None]
    sel_noisy = torch.from_numpy(add_noise(sel_clean.numpy(), cfg.sigma,
                                           np.random.default_rng([cfg.seed, 3]))).to(dev)
    sel_clean = sel_clean.to(dev)
    best = (float("inf"), 0, None)
    history = []
    t0, c0 = time.perf_counter(), time.process_time()
    running = 0.0
    for step in range(1, cfg.steps + 1):
        model.train()
        noisy, clean = stream.sample()
        xn = torch.from_numpy(noisy).to(dev).contiguous(memory_format=torch.channels_last)
        xc = torch.from_numpy(clean).to(dev)
        loss = torch.mean((model.denoise(xn) - xc) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        sn.normalize_()
        running += float(loss.detach())
        if step % cfg.log_every == 0 or step == cfg.steps:
            k = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            mse = running / k
            running = 0.0
            model.eval()
            with torch.no_grad():
                sel = float(torch.mean((model.denoise(sel_noisy) - sel_clean) ** 2))
            if sel < best[0]:
                best = (sel, step, copy.deepcopy(model.state_dict()))
            history.append({"step": step, "mse": mse, "psnr": 10 * math.log10(1 / mse),
                            "select_psnr": 10 * math.log10(1 / sel),
                            "seconds": time.perf_counter() - t0})  # fmt: skip
            log(f"step {step}/{cfg.steps}  mse {mse:.3e}  ({history[-1]['psnr']:.2f} dB, "
                f"held-out {history[-1]['select_psnr']:.2f} dB)  "
                f"{history[-1]['seconds']:.0f} s")  # fmt: skip
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    model.load_state_dict(best[2])
    model = model.cpu().float().to(memory_format=torch.contiguous_format)
    final = finalize_lipschitz(model, grid=128)
    sets = validation_images(cfg.seed)
    report = {
        "train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "history": history,
        "kept_step": best[1],
        "validation": evaluate(model, sets, cfg.sigma, cfg.seed),
        "lipschitz": {"symbol_layer_norms": final["layer_norms"],
                      "R_symbol_bound": final["lipschitz_bound"],
                      **lipschitz_report(model, sets["natural"], cfg.sigma, cfg.seed)},
    }  # fmt: skip
    return model, report


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    p = argparse.ArgumentParser(
        prog="python -m ptytasks.learned.train_denoiser",
        description="Train the PINE denoiser (RealSN-DnCNN on dead-leaves images).",
    )
    p.add_argument("--out", type=Path, default=Path("dncnn.pt"),
                   help="weights file (.pt); the JSON report is written beside it")
    p.add_argument("--paper", action="store_true",
                   help="the paper's size: DnCNN-17/64, 1000 fixed 128x128 images, 50 epochs")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                           metavar="{true,false}", help=f"default {f.default}")
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            p.add_argument(flag, type=kind, default=None, help=f"default {f.default}")
    args = p.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}  # fmt: skip
    cfg = TrainConfig.paper(**given) if args.paper else TrainConfig(**given)
    return args, cfg


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the JSON record it wrote."""
    args, cfg = parse_args(argv)
    cmd = ["python", "-m", "ptytasks.learned.train_denoiser"] + list(
        sys.argv[1:] if argv is None else argv
    )
    model, report = train(cfg)
    out = Path(args.out)
    meta = {"seed": cfg.seed, "train": asdict(cfg), "command": shlex.join(cmd)}
    save_denoiser(model, out, meta)
    record = {
        "command": shlex.join(cmd), "seed": cfg.seed, "config": asdict(cfg),
        "architecture": asdict(model.config),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "weights": out.name, "weights_bytes": out.stat().st_size,
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_threads": torch.get_num_threads(), **report,
    }  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lip = report["lipschitz"]
    print(f"wrote {out} ({record['weights_bytes']} bytes); Lip(R) <= {lip['R_symbol_bound']:.4f}; "
          f"max ratio D random {lip['D_random_max']:.4f}, natural {lip['D_natural_max']:.4f}, "
          f"||J_D|| max {lip['D_jacobian_norm_max']:.4f}")  # fmt: skip
    return record


if __name__ == "__main__":
    main()
