"""PINE: ePIE with a nonexpansive learned denoiser (Yamada et al. 2024, J. Appl. Cryst. 57).

Each epoch is one ePIE sweep over all frames in random order (the stochastic-gradient step
of the paper's algorithm, steps ``alpha / max|P|^2`` and ``beta / max|O_r|^2``), followed
by the denoising step of the hybrid steepest descent method,

    ``O <- (1 - rho) O + rho D(O) = O - rho R(O)``,   ``D(O) = D(Re O) + i D(Im O)``,

with ``D = Id - R`` a RealSN-DnCNN (:mod:`ptytasks.learned.dncnn`) trained on synthetic
dead-leaves images. ``rho = 0`` is exactly ePIE (the same code path, same random order);
the paper uses ``rho = 0.49`` (HSD needs ``rho`` in ``(0, 1/2)`` and a nonexpansive ``D``).

The sweep is :func:`ptytasks.engines.pie.reconstruct_pie`; the denoising step runs in its
per-epoch callback on the live object tensor (in place), so position correction, probe
modes, mini-batches, near-field data and the rPIE rule (``variant="rpie"``) all carry over.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from ptytasks.data import PtychoData
from ptytasks.engines.options import PIEOptions
from ptytasks.engines.pie import Callback, reconstruct_pie
from ptytasks.engines.result import ReconstructionResult
from ptytasks.physics.models.base import ForwardModel


@dataclass
class PINEOptions(PIEOptions):
    """Options of :func:`reconstruct_pine`: :class:`~ptytasks.engines.options.PIEOptions`
    (every field, for the ePIE sweep) with PINE's own defaults, plus the denoising step.

    Attributes
    ----------
    iterations : int
        Epochs (one sweep over all frames, then one denoising step). Default 150.
    alpha, beta : float
        Object and probe steps of the sweep. Defaults: ``alpha`` the variant's own (ePIE 1:
        with ``beta = 0.1`` the paper's setting for measured data, its best on low-dose
        simulations was ``(0.5, 0.1)``; rPIE 0.1 -- at 1 rPIE's object step is ePIE's).
    variant : {"epie", "rpie"}
        Update rule of the sweep (the paper: ePIE; rPIE + denoiser is an extension).
    rho : float
        Denoising weight, ``0 <= rho <= 1`` (paper: 0.49; ``0`` is plain ePIE).
    denoiser : str or None
        Weights file of :func:`ptytasks.learned.dncnn.load_denoiser`; None: the committed
        default (``ptytasks/learned/weights/dncnn_default.pt``).
    denoise_start, denoise_every : int
        First epoch (0-based) with a denoising step, and the spacing of later ones.
    Others
        As in :class:`~ptytasks.engines.options.PIEOptions`.
    """

    variant: Literal["epie", "rpie"] = "epie"
    iterations: int = 150
    alpha: float | None = None
    beta: float | None = 0.1
    rho: float = 0.49
    denoiser: str | None = None
    denoise_start: int = 0
    denoise_every: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= float(self.rho) <= 1.0:
            raise ValueError(f"PINE rho must be in [0, 1] (paper: 0.49); got {self.rho}")
        if int(self.denoise_every) < 1:
            raise ValueError(f"denoise_every must be >= 1; got {self.denoise_every}")
        if int(self.n_slices) > 1:  # it failed after the first sweep: a 2-D denoiser
            raise ValueError(f"PINE denoises one 2-D object (n_slices 1), not {self.n_slices} "
                             "slices: use rpie (3PIE) or rnf for multislice")  # fmt: skip

    def pie_options(self) -> PIEOptions:
        """The options of the ePIE sweep (every shared field carried over)."""
        names = {f.name for f in dataclasses.fields(PIEOptions)}
        return PIEOptions(**{k: getattr(self, k) for k in names})


def _denoiser(spec, device: torch.device):
    """A DnCNN from a path, a model (used as given) or None (the default weights)."""
    if isinstance(spec, torch.nn.Module):
        return spec.to(device).eval()
    from ptytasks.learned.dncnn import load_denoiser

    return load_denoiser(spec, device=device)


def reconstruct_pine(
    data: PtychoData,
    options: PINEOptions | None = None,
    *,
    object_prior=None,
    probe_prior=None,
    model: ForwardModel | None = None,
    denoiser: torch.nn.Module | None = None,
    callback: Callback | None = None,
) -> ReconstructionResult:
    """Reconstruct object and probe with PINE (ePIE sweeps + learned denoising steps).

    Parameters
    ----------
    data : PtychoData
        Far-field or near-field scanning data (as :func:`reconstruct_pie`).
    options : PINEOptions, optional
    object_prior, probe_prior, model
        As in :func:`ptytasks.engines.pie.reconstruct_pie`.
    denoiser : torch.nn.Module, optional
        A :class:`~ptytasks.learned.dncnn.DnCNN` (its ``forward`` is the residual ``R``);
        overrides ``options.denoiser``.
    callback : callable, optional
        ``callback(epoch, info)`` after each epoch's denoising step; ``info`` as in
        :func:`reconstruct_pie` plus ``denoise_time`` (s) and ``denoise_change``
        (``rho ||R(O)|| / ||O||``, 0 on epochs without a denoising step).

    Returns
    -------
    ReconstructionResult
        ``engine="pine"``; ``timings`` ``total``, ``per_epoch`` (sweep + denoising),
        ``denoise`` (total seconds in the denoiser); ``extras["denoise_change"]`` per epoch
        and ``extras["denoiser"]`` (architecture and the weights' provenance).
    """
    opts = options or PINEOptions()
    rho = float(opts.rho)
    net = None
    if rho > 0:
        net = _denoiser(denoiser if denoiser is not None else opts.denoiser,
                        torch.device(opts.device))  # fmt: skip
    changes: list[float] = []
    den_times: list[float] = []

    def step(epoch: int, info: dict):
        t0 = time.perf_counter()
        change = 0.0
        due = epoch >= opts.denoise_start and (epoch - opts.denoise_start) % opts.denoise_every == 0
        if net is not None and due:
            obj = info["object"]
            from ptytasks.learned.dncnn import residual_complex

            r = residual_complex(net, obj)
            change = rho * float(r.abs().norm()) / max(float(obj.abs().norm()), 1e-30)
            obj.sub_(rho * r)  # (1 - rho) O + rho (O - R(O)), in place
        changes.append(change)
        den_times.append(time.perf_counter() - t0)
        if callback is not None:
            # the epoch's time includes its denoising: PINE's timings (the grid's s/epoch and
            # equal-time columns) once left it out, ~5x PINE's PIE epoch at 1e4 counts
            info = dict(info, denoise_time=den_times[-1], denoise_change=change,
                        time=info["time"] + den_times[-1],
                        elapsed=info["elapsed"] + den_times[-1])
            return callback(epoch, info)
        return None

    result = reconstruct_pie(data, opts.pie_options(), object_prior=object_prior,
                             probe_prior=probe_prior, model=model, callback=step)
    timings = dict(result.timings)
    n = max(1, len(den_times))
    timings["denoise"] = float(sum(den_times))
    timings["per_epoch"] = float(timings.get("per_epoch", 0.0)) + timings["denoise"] / n
    extras = dict(result.extras)
    extras["denoise_change"] = changes
    if net is not None:
        extras["denoiser"] = {"config": asdict(net.config), "meta": getattr(net, "meta", {})}
    return dataclasses.replace(result, engine="pine", options=opts.to_dict(), timings=timings,
                               extras=extras)  # fmt: skip
