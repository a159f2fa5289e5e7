"""Annealed whole-pixel search for scan positions far outside the refinement's reach.

The engines' position refinement (PIE's least-squares step and grid search, RNF's learned
corners) captures errors of about 2 px RMS on a 22 px probe, not 5 px
(``bench/positions_capture.py``): an object rebuilt at wrong corners explains each frame
best where it already is. This stage is the remedy cryo-EM uses for the same bias
(deterministic annealing, a soft assignment over latent shifts). In a sequential rPIE pass
every frame scores all whole-pixel offsets within ``radius`` of its nominal corner by its
amplitude error ``E_c`` and weighs them by

    w_c ~ exp(-(E_c - min E) / (T min E) - r_c^2 / (2 prior_px^2)),

updates the object at every candidate with weight above ``min_weight`` (its rPIE update
times ``w_c``), and takes the weights' mean as its position. ``T`` falls geometrically
from ``t_start`` to ``t_end`` over the epochs, and the object is low-passed after each
epoch by a Gaussian whose width falls from ``blur_px`` to 0 over the first ``blur_share``
of them: while both are high the object is an average over placements and cannot lock in
the nominal ones. The probe is held fixed (a known or calibrated probe; mode 0 of a mixed
state). Measured (records/positions-coarse-stage-attempts-75a01b3.json, tuning seeds
10-14 of the positions benchmark's case, 5 px RMS + 2 % scale, 50 frames of 64^2): from
4.6-4.9 px to 0.47-1.65 px, and to 0.14-1.40 px (median 0.38) after RNF's refinement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ptytasks.physics.fft import gaussian_blur


@dataclass(frozen=True)
class PositionSearchOptions:
    """Settings of :func:`search_positions` (chosen on tuning seeds 10 and 11, checked
    unchanged on 12-14).

    Attributes
    ----------
    radius : int
        Search half-width around each nominal corner, pixels (``(2 radius + 1)^2``
        candidates per frame and epoch).
    prior_px : float
        Width of the Gaussian prior on a frame's offset from its nominal corner, pixels
        (the stage's expected error per frame).
    epochs : int
        Sequential passes over the frames.
    t_start, t_end : float
        Temperature, relative to the frame's best error, at the first and last epoch.
    blur_px, blur_share : float
        Gaussian low-pass of the object after each epoch, ``blur_px`` pixels at first and
        0 after ``blur_share`` of the epochs.
    alpha : float
        rPIE's object step regulariser.
    min_weight : float
        Candidates below this weight get no object update.
    seed : int
        Seed of the frame order.
    """

    radius: int = 10
    prior_px: float = 5.0
    epochs: int = 30
    t_start: float = 0.3
    t_end: float = 1e-3
    blur_px: float = 3.0
    blur_share: float = 0.7
    alpha: float = 0.1
    min_weight: float = 1e-3
    seed: int = 0


def search_positions(data, probe, options: PositionSearchOptions | None = None,
                     model=None) -> np.ndarray:  # fmt: skip
    """Window corners ``(n, 2)`` (pixels) found by the annealed search.

    Parameters
    ----------
    data : PtychoData
        Scanning data (far field, near field, coded); its ``positions_px`` are the nominal
        corners the search starts from.
    probe : complex ``(wy, wx)`` or ``(M, wy, wx)``
        The probe (mode 0 is used), held fixed, in the frames' units (its power is the
        counts a frame holds behind an object of modulus 1). The settings were frozen with
        the true probe of simulations; a probe rescaled to the mean counts found other
        positions on a tuning seed (0.82 against 0.56 px).
    options : PositionSearchOptions
    model : ForwardModel, optional
        Default: the modality's model for ``data``.

    Returns
    -------
    float64 ``(n, 2)``, inside the object's allowed corner range.
    """
    from ptytasks.engines.pie_state import detector_mask_of
    from ptytasks.modalities import modality_of, model_for

    o = options or PositionSearchOptions()
    if not modality_of(data).scanning:
        raise ValueError(f"position_search moves scan positions; {data.modality!r} data has "
                         "none (Fourier ptychography learns LED wavevectors instead)")  # fmt: skip
    model = model or model_for(data)
    w = data.frame_shape
    n, r = data.n_frames, int(o.radius)
    amp = torch.sqrt(torch.as_tensor(np.clip(np.asarray(data.frames), 0, None),
                                     dtype=torch.float32))  # fmt: skip
    sf = model.intensity_factors.detach().float().sqrt()
    p = torch.as_tensor(np.asarray(probe)).to(torch.complex64)
    p = p[0] if p.dim() == 3 else p
    if tuple(p.shape) != tuple(w):
        raise ValueError(f"position_search: probe shape {tuple(p.shape)} != frame shape {w}")
    m = detector_mask_of(data.meta)  # pixels that count: a beamstop's zeros must not
    use = None if m is None else torch.as_tensor(np.asarray(m, bool))  # move frames
    pint = p.abs() ** 2
    den = (1 - o.alpha) * pint + o.alpha * pint.max()
    upper = np.subtract(data.object_shape, w)
    nom = np.clip(np.round(np.asarray(data.positions_px)), 0, upper).astype(int)
    obj = torch.ones((data.object_shape[0] + 2 * r, data.object_shape[1] + 2 * r),
                     dtype=torch.complex64)  # fmt: skip
    steps = torch.arange(-r, r + 1)
    off = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), -1).reshape(-1, 2)
    prior = (off.float() ** 2).sum(1) / (2 * o.prior_px**2)
    gen = torch.Generator().manual_seed(int(o.seed))
    est = nom.astype(np.float64)
    for epoch in range(o.epochs):
        temp = o.t_start * (o.t_end / o.t_start) ** (epoch / max(1, o.epochs - 1))
        for i in torch.randperm(n, generator=gen).tolist():
            y, x = nom[i]
            # corner c + offset on the object is corner c + offset + r on the padded one
            big = obj[y : y + w[0] + 2 * r, x : x + w[1] + 2 * r]  # a view: updated in place
            cands = big.unfold(0, w[0], 1).unfold(1, w[1], 1).reshape(-1, *w)  # dy-major
            psi = cands * p
            idx = torch.full((len(off),), i, dtype=torch.long)
            wave = model.to_detector(psi, idx)
            mod = wave.abs() * sf[i]
            sq = (mod - amp[i]) ** 2
            err = (sq if use is None else sq * use).sum((-2, -1))
            best = err.min().clamp_min(1e-30)
            wts = torch.softmax(-(err - best) / (temp * best) - prior, 0)
            keep = torch.nonzero(wts > o.min_weight).flatten()
            wk = wts[keep] / wts[keep].sum()
            ratio = amp[i] / sf[i] / (wave[keep].abs() + 1e-8)
            if use is not None:  # masked pixels keep the model's own wave
                ratio = torch.where(use, ratio, torch.ones_like(ratio))
            proj = wave[keep] * ratio
            dpsi = model.from_detector(proj, idx[keep]) - psi[keep]
            upd = p.conj() * dpsi / den * wk[:, None, None]
            for k, c in enumerate(keep.tolist()):
                oy, ox = int(off[c, 0]) + r, int(off[c, 1]) + r
                big[oy : oy + w[0], ox : ox + w[1]] += upd[k]
            est[i] = nom[i] + (wts[:, None] * off.float()).sum(0).numpy()
        sigma = o.blur_px * max(0.0, 1 - epoch / max(o.blur_share * o.epochs, 1e-9))
        if sigma > 0.05:
            obj.copy_(gaussian_blur(obj, sigma))
    return np.clip(est, 0, upper)
