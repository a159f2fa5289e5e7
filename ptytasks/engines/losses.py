"""Loss terms of the residual neural-field engine (paper Eq. 6).

``Loss = mean_i L_data(J_i, I_i) + mu * L_wavelet(Delta O) / N``

Data terms compare predicted intensities ``I`` with measured ``J`` (``(B, ny, nx)``,
expected counts) either as intensities or as amplitudes ``sqrt(I)`` (the usual choice for
ptychography: it is variance-stabilising for Poisson counts). Available (paper: "L1, smooth
L1, L2, or gradient-domain"; Huber for electrons, gradient domain for optical and X-ray):

* ``"l1"`` mean absolute difference;
* ``"huber"`` Huber with threshold ``delta`` (``0.5 r^2`` for ``|r| < delta``, else
  ``delta (|r| - delta / 2)``); ``"smooth_l1"`` is the same curve divided by ``delta``
  (torch's ``smooth_l1_loss`` with ``beta = delta``);
* ``"l2"`` mean squared difference;
* ``"gradient"`` L1 between the finite-difference gradients (forward differences along y
  and x, no wrap) of prediction and measurement: blind to per-frame offsets and smooth
  backgrounds (Zhang et al. 2023; ELFPIE);
* ``"poisson"`` Poisson negative log-likelihood written as a deviance,
  ``I - J + J log((J + eps) / (I + eps))`` (zero at ``I = J``), intensity domain only.

Reduction: ``"mean"`` averages over pixels and frames (= the paper's ``1/B sum_i`` of
per-frame pixel means), ``"sum"`` sums pixels and averages frames, ``"none"`` returns the
per-frame values ``(B,)``. An optional ``mask`` (1 = valid detector pixel, broadcast
against the frames) excludes pixels; means are then over valid pixels.

The wavelet prior (:func:`wavelet_sparsity`) is the L1 norm of the Haar *detail* subbands
(horizontal, vertical, diagonal at every level; the approximation band is excluded: it is
the low-pass content of the field, not sparse, and penalising it would pull the mean
transmission towards zero) of a complex field, each complex coefficient counted by its
modulus ``|c|`` (isotropic in the complex plane, so invariant to a global phase; ``"reim"``
counts ``|Re c| + |Im c|`` instead), divided by the number of pixels ``N`` and times ``mu``
(0.1). The paper applies it to the complex residual ``Delta O = O - O_initial`` (Fig. 1
and text; Eq. 6 writes ``O``): pass whichever field the engine regularises.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ptytasks.fields.haar import haar_wavedec2

#: Mean counts per pixel below which frames are "low counts": the data-term rule's smooth-L1
#: gate (:mod:`ptytasks.engines.data_term`, hypothesis 18) and the blind far-field probe's
#: switch to scoring by the trial's own deviance (:mod:`ptytasks.engines.blind_probe`,
#: hypothesis 37). Here, below both, so neither imports the other.
COUNTS_MAX = 64.0

DATA_LOSSES = ("l1", "huber", "smooth_l1", "l2", "gradient", "poisson")


def _reduce(per_pixel: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Reduce ``(B, ny, nx)`` per-pixel losses (optionally masked)."""
    if mask is not None:
        m = torch.broadcast_to(mask.to(per_pixel.dtype), per_pixel.shape)
        per_pixel = per_pixel * m
        count = m.flatten(-2).sum(-1).clamp_min(1.0)
    else:
        count = per_pixel.shape[-2] * per_pixel.shape[-1]
    per_frame_sum = per_pixel.flatten(-2).sum(-1)
    if reduction == "none":
        return per_frame_sum / count
    if reduction == "sum":
        return per_frame_sum.mean()
    if reduction == "mean":
        if mask is None:
            return per_pixel.mean()
        return per_frame_sum.sum() / count.sum()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def noise_threshold(loss: str, delta, frames: torch.Tensor, scale: float,
                    mask: torch.Tensor | None = None) -> float:
    """The Huber / smooth-L1 threshold, in the engine's normalised amplitude units.

    ``delta`` a number: used as given. ``delta == "noise"``: when ``frames`` are photon
    counts (every value a whole number), four times the Poisson amplitude noise. The square
    root of a count has a standard deviation of about 1/2 at any mean count from ~10 on
    (variance stabilising), so after the engine divides the frames by ``scale`` (mean counts
    per pixel; the RNF engine's Fourier scale is the centre LED's) it is
    ``0.5 / sqrt(scale)``, and the threshold ``2 / sqrt(scale)``. Residuals
    within the noise are then weighed quadratically (unbiased for the mean, where an L1
    term fits the median, which is 0 for any pixel expecting fewer than ln 2 photons), and
    larger ones linearly (robust, as L1). The factor 4 (against 2, L1, L2 and Poisson) was
    chosen on tuning cases only (``docs/rnf.md``); RNF uses it with ``loss="smooth_l1"``.
    Frames that are not counts (e.g. HDR-combined camera images) have no known noise level:
    smooth L1 then falls back to L1 (threshold 0) and Huber to 0.1.
    """
    if delta != "noise":
        return float(delta)
    if loss not in ("huber", "smooth_l1"):
        return 0.0
    if mask is not None:  # whole numbers where measured (a masked pixel may hold anything)
        frames = frames[..., mask]
    counts = bool(torch.equal(frames, torch.round(frames)))
    if counts and scale > 0:
        return 2.0 / math.sqrt(float(scale))
    return 0.0 if loss == "smooth_l1" else 0.1


def _pointwise(name: str, pred: torch.Tensor, meas: torch.Tensor, delta: float, eps: float):
    if name == "l1":
        return (pred - meas).abs()
    if name == "l2":
        return (pred - meas).square()
    if name == "huber":
        return F.huber_loss(pred, meas, reduction="none", delta=delta)
    if name == "smooth_l1":
        return F.smooth_l1_loss(pred, meas, reduction="none", beta=delta)
    if name == "poisson":
        # deviance form, exactly 0 at pred == meas (eps guards log 0 in dark pixels)
        return pred - meas + torch.xlogy(meas, meas + eps) - torch.xlogy(meas, pred + eps)
    raise ValueError(f"unknown data loss {name!r}; choose from {DATA_LOSSES}")


class DataLoss(nn.Module):
    """A data-fidelity term; see :func:`data_loss`.

    ``forward(predicted, measured, mask=None)`` with intensities ``(B, ny, nx)`` (any
    leading shape) returns a scalar (or ``(B,)`` for ``reduction="none"``).
    """

    def __init__(
        self, name: str, domain: str = "amplitude", *, reduction: str = "mean",
        delta: float = 1.0, eps: float = 1e-8, base: str = "l1",
    ):
        super().__init__()
        if name not in DATA_LOSSES:
            raise ValueError(f"unknown data loss {name!r}; choose from {DATA_LOSSES}")
        if domain not in ("amplitude", "intensity"):
            raise ValueError("domain must be 'amplitude' or 'intensity'")
        if name == "poisson" and domain != "intensity":
            raise ValueError("the Poisson likelihood needs domain='intensity'")
        self.name, self.domain, self.reduction = name, domain, reduction
        self.delta, self.eps, self.base = float(delta), float(eps), base

    def transform(self, intensity: torch.Tensor) -> torch.Tensor:
        """Intensity -> compared quantity (``sqrt(I + eps)`` in the amplitude domain).

        ``eps`` bounds the gradient ``1 / (2 sqrt(I + eps))`` where the prediction is dark.
        """
        if self.domain == "intensity":
            return intensity
        return torch.sqrt(intensity.clamp_min(0) + self.eps)

    def forward(
        self, predicted: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        pred, meas = self.transform(predicted), self.transform(measured)
        if self.name != "gradient":
            per_pixel = _pointwise(self.name, pred, meas, self.delta, self.eps)
            return _reduce(per_pixel, mask, self.reduction)
        return gradient_loss(pred, meas, mask, reduction=self.reduction, base=self.base,
                             delta=self.delta)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, domain={self.domain!r}, reduction={self.reduction!r}"


def gradient_loss(
    pred: torch.Tensor, meas: torch.Tensor, mask: torch.Tensor | None = None, *,
    reduction: str = "mean", base: str = "l1", delta: float = 1.0,
) -> torch.Tensor:
    """Loss between forward-difference gradients of ``pred`` and ``meas`` ``(..., ny, nx)``.

    ``sum_axes base(d_axis pred - d_axis meas)``, each axis averaged over its
    ``(ny - 1) nx`` / ``ny (nx - 1)`` differences (and frames); a difference counts only
    where both its pixels are valid in ``mask``.
    """
    total = 0.0
    for dim in (-2, -1):
        dp, dm = torch.diff(pred, dim=dim), torch.diff(meas, dim=dim)
        m = None
        if mask is not None:
            mb = torch.broadcast_to(mask.to(pred.dtype), pred.shape)
            m = mb.narrow(dim, 0, mb.shape[dim] - 1) * mb.narrow(dim, 1, mb.shape[dim] - 1)
        total = total + _reduce(_pointwise(base, dp, dm, delta, 0.0), m, reduction)
    return total


def data_loss(name: str, domain: str = "amplitude", **kwargs) -> DataLoss:
    """Factory for a data-fidelity term.

    Parameters
    ----------
    name : {"l1", "huber", "smooth_l1", "l2", "gradient", "poisson"}
    domain : {"amplitude", "intensity"}
        Compare ``sqrt(I)`` or ``I``. Poisson requires ``"intensity"``.
    **kwargs
        ``reduction`` ("mean"), ``delta`` (Huber / smooth-L1 threshold, in the units of the
        compared quantity, 1.0), ``eps`` (amplitude floor, 1e-8), ``base`` (point loss of
        the gradient term, "l1").

    Returns
    -------
    DataLoss
        ``loss(predicted_intensity, measured_intensity, mask=None)``.
    """
    return DataLoss(name, domain, **kwargs)


def wavelet_l1(
    field: torch.Tensor, *, levels: int = 1, norm: str = "modulus", include_approx: bool = False
) -> torch.Tensor:
    """Sum of magnitudes of the Haar detail coefficients of ``field`` ``(..., H, W)``.

    ``norm="modulus"``: ``|c|`` per (complex) coefficient; ``"reim"``: ``|Re c| + |Im c|``.
    ``include_approx`` adds the coarsest approximation band.
    """
    coeffs = haar_wavedec2(field, levels)
    bands = [b for det in coeffs[1:] for b in det]
    if include_approx:
        bands.append(coeffs[0])
    total = field.new_zeros((), dtype=field.real.dtype if field.is_complex() else field.dtype)
    for b in bands:
        if norm == "modulus":
            total = total + b.abs().sum()
        elif norm == "reim":
            total = total + (torch.view_as_real(b).abs().sum() if b.is_complex() else b.abs().sum())
        else:
            raise ValueError("norm must be 'modulus' or 'reim'")
    return total


def wavelet_sparsity(
    field: torch.Tensor, mu: float = 0.1, *, levels: int = 1, norm: str = "modulus",
    include_approx: bool = False, spin: bool = False,
) -> torch.Tensor:
    """Wavelet prior ``mu * L_wavelet(field) / N`` of paper Eq. (6).

    Parameters
    ----------
    field : complex (or real) tensor ``(..., H, W)``
        Usually the residual ``Delta O`` of the field (see module doc).
    mu : float
        Weight (paper: 0.1).
    levels : int
        Haar levels (1: the paper's single four-quadrant split).
    norm, include_approx
        See :func:`wavelet_l1`.
    spin : bool
        Cycle spinning: the mean of the term over the field shifted by 0 or 1 px along each
        axis. One decimated Haar level only sees differences *inside* its 2 x 2 blocks,
        so the pairs across the blocks' edges (half of them) go unpenalised; the four
        shifts see every neighbouring pair alike.

    Returns
    -------
    scalar tensor; ``N = field.numel()`` (pixels, times any leading dims).
    """
    shifts = ((0, 0), (0, 1), (1, 0), (1, 1)) if spin else ((0, 0),)
    l1 = sum(wavelet_l1(field[..., dy:, dx:], levels=levels, norm=norm,
                        include_approx=include_approx) for dy, dx in shifts)
    return mu * l1 / (len(shifts) * field.numel())
