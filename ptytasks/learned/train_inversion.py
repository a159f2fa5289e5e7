"""Training of the single-shot networks (PPN, PtychoNN) on streamed simulated patches.

``ptyflow train-learned --model ppn --out ppn.pt`` runs :func:`run`. The papers' recipe:
Adam, ``ReduceLROnPlateau`` on the validation loss (factor 0.5, patience 2, floor 1e-4),
MSE of amplitude plus MSE of phase (both normalised to ``[0, 1]`` by the training ranges;
PPN eq. 12) or the combined ``alpha MSE + (1 - alpha) NSSIM`` with ``alpha = 0.9`` (PPN
Sec. V-B). An "epoch" here is ``epoch_steps`` streamed batches (the stream never repeats);
after each one the held-out validation set is scored, the scheduler steps and the best
weights so far are kept.
"""

from __future__ import annotations

import copy
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ptytasks.learned.inversion import InversionConfig, build, n_parameters, save_inversion
from ptytasks.learned.single_shot_data import (
    TRAIN_KINDS,
    Geometry,
    NoiseModel,
    SingleShotStream,
    StreamConfig,
    held_out_batch,
)

LOSSES = ("mse", "mse_nssim")


@dataclass
class TrainConfig:
    """Settings of :func:`train` (defaults: the CPU-sized run of the committed weights).

    Attributes
    ----------
    model : {"ppn", "ptychonn"}
    steps, batch : int
        Optimiser steps and samples per step.
    epoch_steps : int
        Steps between validations / scheduler steps.
    lr, plateau_factor, plateau_patience, min_lr :
        Adam and ``ReduceLROnPlateau`` (the papers: factor 0.5, patience 2, floor 1e-4).
    loss : {"mse", "mse_nssim"}
    alpha : float
        Weight of the MSE in ``mse_nssim``.
    probe_diameter_px : float or None
        Probe footprint diameter, object pixels (:class:`~ptytasks.learned.single_shot_data.
        Geometry`; None: its default).
    out_size : int or None
        Side ``M`` of the predicted patch (None: ``N / 2`` when it holds the footprint,
        else ``N``); ``N / 8`` times a power of two.
    frame_size, dim, heads, patch, local_depth, nonlocal_depth, nonlocal_stride, stem : int
    local_stem : int
        Frame side ``N`` and the architecture (:class:`~ptytasks.learned.inversion.
        InversionConfig`; PtychoNN uses ``dim`` only; ``dim = 0``: PPN 48, PtychoNN 32).
    n_val : int
        Held-out validation samples.
    bn_batches : int
        Training batches over which BatchNorm statistics are re-estimated before every
        validation (:func:`recalibrate_batchnorm`); they are not optimiser steps.
    canvas : int
        Side of the object canvases the patches are cut from, pixels.
    kinds : tuple of str
        Object image kinds of the training (and validation) canvases.
    single_material : bool
        The object model (:class:`~ptytasks.learned.single_shot_data.NoiseModel`): one image
        sets amplitude and phase.
    amplitude_range : (float, float) or None
        Amplitude at image value 0 and 1; None: ``(0.8, 1.0)``, or ``(1.0, 0.8)`` for a single
        material (thicker parts absorb more).
    seed, threads : int
    """

    model: str = "ppn"
    steps: int = 3000
    batch: int = 32
    epoch_steps: int = 100
    lr: float = 1e-3
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 1e-4
    loss: str = "mse_nssim"
    alpha: float = 0.9
    frame_size: int = 32
    probe_diameter_px: float | None = None
    out_size: int | None = None
    dim: int = 0
    heads: int = 2
    patch: int = 4
    local_depth: int = 2
    nonlocal_depth: int = 2
    nonlocal_stride: int = 4
    stem: int = 0
    local_stem: int = 16
    n_val: int = 64
    bn_batches: int = 10
    canvas: int = 160
    kinds: tuple[str, ...] = TRAIN_KINDS
    single_material: bool = False
    amplitude_range: tuple[float, float] | None = None
    seed: int = 0
    threads: int = 1


# --- losses -------------------------------------------------------------------------------
def _gauss(win: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(win, dtype=torch.float32) - win // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_torch(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of ``(B, H, W)`` images (Gaussian window 7, sigma 1.5; Wang et al. 2004)."""
    w = _gauss().to(a)
    x, y = a[:, None], b[:, None]
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx**2
    syy = F.conv2d(y * y, w) - my**2
    sxy = F.conv2d(x * y, w) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


def normalized(amp: torch.Tensor, phase: torch.Tensor, noise: NoiseModel):
    """Amplitude and phase mapped to ``[0, 1]`` by the training ranges."""
    a0, a1 = noise.amplitude_range
    p0, p1 = noise.phase_range
    return (amp - a0) / (a1 - a0), (phase - p0) / (p1 - p0)


def loss_fn(pred, target, noise: NoiseModel, kind: str = "mse", alpha: float = 0.9):
    """``MSE_amp + MSE_phase`` (normalised), or ``alpha MSE + (1 - alpha) NSSIM`` of both."""
    pa, pp = normalized(*pred, noise)
    ta, tp = normalized(*target, noise)
    mse = F.mse_loss(pa, ta) + F.mse_loss(pp, tp)
    if kind == "mse":
        return mse
    if kind == "mse_nssim":
        nssim = (1 - ssim_torch(pa, ta)) + (1 - ssim_torch(pp, tp))
        return alpha * mse + (1 - alpha) * nssim
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


# --- evaluation ---------------------------------------------------------------------------
@torch.no_grad()
def predict(model, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude and phase for ``(n, 1, N, N)`` inputs, in chunks, eval mode."""
    model.eval()
    out = [model(x[i:i + batch]) for i in range(0, len(x), batch)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def illuminated(geometry: Geometry, fraction: float = 0.1) -> np.ndarray:
    """Pixels of the ``M x M`` output patch where ``|P|^2`` is at least ``fraction`` of its peak.

    Elsewhere in the patch the frame carries (almost) no information about the object, so a
    prediction there is a guess from the training distribution; the stitched-field metrics
    use the same rule (``bench/bench_learned.py``).
    """
    from ptytasks.learned.single_shot_data import zone_plate

    p2 = np.abs(zone_plate(geometry, 1.0)) ** 2
    return p2[geometry.crop, geometry.crop] >= fraction * p2.max()


def patch_scores(model, x, amp, phase, noise: NoiseModel, mask=None) -> dict:
    """Per-patch PSNR (dB) and SSIM of amplitude and phase: arrays ``(n,)`` by metric.

    Measured on the ``[0, 1]``-normalised images (data range 1, the training ranges:
    amplitude ``0.2``, phase ``pi / 2`` radians), as in the papers' Table I, over ``mask``
    (default: the patch's illuminated pixels, :func:`illuminated`).
    """
    from ptytasks.metrics.errors import psnr, ssim

    if mask is None:
        mask = illuminated(model.config.geometry)
    pa, pp = normalized(*predict(model, x), noise)
    ta, tp = normalized(amp, phase, noise)
    out = {}
    for name, p, t in (("amp", pa, ta), ("phase", pp, tp)):
        pairs = list(zip(p.numpy(), t.numpy(), strict=True))
        out[f"{name}_psnr"] = np.array([psnr(a, b, data_range=1.0, mask=mask) for a, b in pairs])
        out[f"{name}_ssim"] = np.array([ssim(a, b, data_range=1.0, mask=mask) for a, b in pairs])
    return out


def patch_metrics(model, x, amp, phase, noise: NoiseModel, mask=None) -> dict:
    """Means of :func:`patch_scores` over the set (floats by metric)."""
    return {k: float(v.mean()) for k, v in patch_scores(model, x, amp, phase, noise, mask).items()}


# --- training -----------------------------------------------------------------------------
@torch.no_grad()
def recalibrate_batchnorm(model, stream, batches: int = 10) -> None:
    """Re-estimate BatchNorm statistics as plain averages over ``batches`` fresh batches.

    The running averages (momentum 0.1) trail weights that change fast early in a short
    run: validation in eval mode was up to 1.5x worse than training in train mode. With
    exact averages under the current weights the two agree.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for _ in range(batches):
        model(stream.sample()[0])
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()


def inversion_config(cfg: TrainConfig) -> InversionConfig:
    """The network :func:`train` builds for ``cfg`` (``build(inversion_config(cfg))`` raises
    ValueError for sizes the network cannot take: a check before any training)."""
    geo = Geometry(frame_size=cfg.frame_size, probe_diameter_px=cfg.probe_diameter_px,
                   out_size=cfg.out_size)
    geo.out_size = geo.out  # stored resolved: the weights do not depend on the default rule
    amp_range = cfg.amplitude_range or ((1.0, 0.8) if cfg.single_material else (0.8, 1.0))
    noise = NoiseModel(single_material=bool(cfg.single_material),
                       amplitude_range=tuple(amp_range))
    dim = cfg.dim or (48 if cfg.model == "ppn" else 32)
    return InversionConfig(model=cfg.model, geometry=geo, noise=noise, dim=dim,
                           heads=cfg.heads, patch=cfg.patch, local_depth=cfg.local_depth,
                           nonlocal_depth=cfg.nonlocal_depth,
                           nonlocal_stride=cfg.nonlocal_stride, stem=cfg.stem,
                           local_stem=cfg.local_stem)  # fmt: skip


def train(cfg: TrainConfig, log=print) -> tuple[torch.nn.Module, dict]:
    """Train one network; returns it (best validation weights, eval mode) and a report."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    icfg = inversion_config(cfg)
    geo, noise = icfg.geometry, icfg.noise
    model = build(icfg)
    kinds = tuple(cfg.kinds)
    stream = SingleShotStream(StreamConfig(batch=cfg.batch, seed=cfg.seed, geometry=geo,
                                           noise=noise, kinds=kinds, canvas=cfg.canvas))
    xv, av, pv = held_out_batch(cfg.n_val, geo, noise, seed=cfg.seed + 1_000_003, kinds=kinds,
                                canvas=cfg.canvas)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    best = (math.inf, 0, None)
    history, running, t0 = [], 0.0, time.perf_counter()
    for step in range(1, cfg.steps + 1):
        model.train()
        x, amp, phase = stream.sample()
        loss = loss_fn(model(x), (amp, phase), noise, cfg.loss, cfg.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(loss.detach())
        if step % cfg.epoch_steps == 0 or step == cfg.steps:
            k = (step - 1) % cfg.epoch_steps + 1
            recalibrate_batchnorm(model, stream, cfg.bn_batches)
            with torch.no_grad():
                model.eval()
                val = float(loss_fn(model(xv), (av, pv), noise, cfg.loss, cfg.alpha))
            sched.step(val)
            if val < best[0]:
                best = (val, step, copy.deepcopy(model.state_dict()))
            history.append({"step": step, "train_loss": running / k, "val_loss": val,
                            "lr": opt.param_groups[0]["lr"],
                            "seconds": time.perf_counter() - t0})  # fmt: skip
            running = 0.0
            log(f"{cfg.model} step {step}/{cfg.steps}  train {history[-1]['train_loss']:.4f}  "
                f"val {val:.4f}  lr {history[-1]['lr']:.1e}  {history[-1]['seconds']:.0f} s")
    seconds = time.perf_counter() - t0
    model.load_state_dict(best[2])
    model.eval().requires_grad_(False)
    report = {"train_seconds": seconds, "kept_step": best[1], "best_val_loss": best[0],
              "history": history, "parameters": n_parameters(model),
              "validation": patch_metrics(model, xv, av, pv, noise)}  # fmt: skip
    return model, report


def run(cfg: TrainConfig, out: str | Path, command: str = "", log=print) -> dict:
    """Train, write the weights to ``out`` and the JSON record beside them; return it."""
    import json

    model, report = train(cfg, log=log)
    out = Path(out)
    meta = {"seed": cfg.seed, "train": asdict(cfg), "command": command}
    save_inversion(model, out, meta)
    record = {"command": command, "seed": cfg.seed, "config": asdict(cfg),
              "architecture": asdict(model.config), "weights": out.name,
              "weights_bytes": out.stat().st_size, "torch": torch.__version__,
              "python": platform.python_version(), "machine": platform.machine(),
              "cpu_threads": torch.get_num_threads(), **report}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record
