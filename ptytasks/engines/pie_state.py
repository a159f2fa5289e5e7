"""The PIE update shared by the engines: :class:`PIEState` (object, probe modes,
positions and one batch's ePIE/rPIE step; the update rules are in
:mod:`ptytasks.engines.pie`'s docstring). Scanning PIE, Fourier PIE, 3PIE
(:mod:`ptytasks.engines.multislice_pie`) and the blind near-field probe all step with it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ptytasks.engines.position_correction import PositionRefiner
from ptytasks.physics.shifts import window_freqs


def diverged(err: float, epoch: int, engine: str, **settings) -> bool:
    """Whether an epoch's summed error is not finite; warns once (RuntimeWarning) if so.

    A PIE iteration whose steps overshoot fills the object with inf and NaN within a few
    epochs and stays there; the engines stop at that epoch instead of running out their
    iterations, and the warning names the settings to lower.
    """
    if math.isfinite(err):
        return False
    named = ", ".join(f"{k} {v}" for k, v in settings.items())
    warnings.warn(f"{engine} diverged: the error is not finite in epoch {epoch}; the run stops "
                  f"there and its object holds inf/NaN. Lower the step sizes or the batch "
                  f"({named}).", RuntimeWarning, stacklevel=3)  # fmt: skip
    return True


def as_detector_mask(mask, window: tuple[int, int], device) -> torch.Tensor | None:
    """``mask`` (bool ``window``-shaped array: detector pixels to enforce, e.g. a tile's
    guard band left out, :attr:`ptytasks.tiling.Tile.guard`) as a bool tensor on
    ``device``; None stays None. A ValueError names both shapes where they differ."""
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask, bool), device=device)
    if tuple(m.shape) != tuple(window):
        raise ValueError(f"detector_mask shape {tuple(m.shape)} != frame shape {tuple(window)}")
    return m


def detector_mask_of(meta: dict) -> np.ndarray | None:
    """The detector pixels an engine enforces (True = use): the dataset's usable-pixel mask
    (``meta["mask"]``: the file's bad pixels and the artefacts found at ingest,
    :mod:`ptytasks.detector`) and a tile's guard band (``meta["tile_mask"]``,
    :attr:`ptytasks.tiling.Tile.guard`) together; None when there is neither."""
    masks = [np.asarray(meta[k], bool) for k in ("mask", "tile_mask")
             if isinstance(meta.get(k), np.ndarray)]  # fmt: skip
    if not masks:
        return None
    if len(masks) == 2 and masks[0].shape != masks[1].shape:
        raise ValueError(f"detector mask shape {masks[0].shape} != tile_mask shape "
                         f"{masks[1].shape}")  # fmt: skip
    return np.logical_and.reduce(masks)


def _local_windows(corners: torch.Tensor, window: tuple[int, int]):
    """Bounding box ``(y0, x0, h, w)`` of the windows and their flat indices inside it.

    Working on the batch's bounding box (not the whole canvas) keeps the sequential
    (batch of one) loop at the cost of the window, independent of the object size.
    """
    wy, wx = window
    y0, x0 = int(corners[:, 0].min()), int(corners[:, 1].min())
    h = int(corners[:, 0].max()) - y0 + wy
    w = int(corners[:, 1].max()) - x0 + wx
    ry = torch.arange(wy, device=corners.device)
    rx = torch.arange(wx, device=corners.device)
    rows = (corners[:, 0] - y0)[:, None, None] + ry[None, :, None]
    cols = (corners[:, 1] - x0)[:, None, None] + rx[None, None, :]
    return (y0, x0, h, w), rows * w + cols


class PIEState:
    """Object, probe modes, positions and the per-batch PIE update.

    Shared by the scanning engine and the Fourier engine (where the "object" is the
    spectrum, the "probe" the pupil and the positions the spectrum-window corners).

    Parameters
    ----------
    obj : complex ``(ny, nx)``; probe : complex ``(M, wy, wx)``; positions : real ``(n, 2)``
        Updated in place.
    model : object with ``to_detector(psi, idx)`` / ``from_detector(wave, idx)``
    amp : real ``(n, wy, wx)``
        Measured amplitudes ``sqrt(I)``.
    sqrt_f : real ``(n,)``
        Square roots of the per-frame intensity factors.
    alpha, beta : float; variant : {"epie", "rpie"}; subpixel : bool; eps : float
        As in :class:`~ptytasks.engines.options.PIEOptions`.
    probe_support : real ``(wy, wx)`` or None
        Multiplied into the probe after each probe update (a pupil's NA disc).
    detector_mask : bool ``(wy, wx)`` or None
        Detector pixels whose measurement is enforced; elsewhere the modulus projection
        keeps the model's own amplitude (and the pixel adds nothing to the error).
    spectrum : bool
        ``obj`` is a centred spectrum cut into pupil windows (Fourier ptychography): the
        sub-pixel shifts use :func:`ptytasks.physics.shifts.window_freqs`.
    """

    def __init__(self, obj, probe, positions, model, amp, sqrt_f, *, alpha: float,
                 beta: float, variant: str, subpixel: bool = True, eps: float = 1e-8,
                 probe_support: torch.Tensor | None = None,
                 detector_mask: torch.Tensor | None = None, spectrum: bool = False):
        self.obj, self.probe, self.pos, self.model = obj, probe, positions, model
        self.amp, self.sqrt_f = amp, sqrt_f
        self.alpha, self.beta, self.rpie = alpha, beta, variant == "rpie"
        self.subpixel, self.eps, self.support = subpixel, eps, probe_support
        self.mask = detector_mask
        self.window = tuple(probe.shape[-2:])
        # 1-D frequency grids for the separable sub-pixel shift ramps (cached: rebuilding
        # 2-D grids per frame dominated the sequential loop).
        rdt = probe.real.dtype
        # Spectrum windows (Fourier ptychography) take the window grid, whose image-domain
        # ramp wraps at the image edge (physics.shifts.window_freqs).
        freqs = window_freqs if spectrum else torch.fft.fftfreq
        self._fy = freqs(self.window[0], dtype=rdt, device=probe.device)
        self._fx = freqs(self.window[1], dtype=rdt, device=probe.device)

    def _shift(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``x(r - shift)`` for ``x`` ``(b, wy, wx)``, ``shift`` ``(b, 2)``: a Fourier ramp.

        Same convention as :func:`ptytasks.physics.shifts.fourier_shift`, built as the
        outer product of two 1-D ramps.
        """
        s = shift.to(self._fy.dtype)
        ry = torch.polar(torch.ones_like(self._fy), -2 * torch.pi * s[:, :1] * self._fy)
        rx = torch.polar(torch.ones_like(self._fx), -2 * torch.pi * s[:, 1:] * self._fx)
        ramp = ry[:, :, None] * rx[:, None, :]
        return torch.fft.ifft2(torch.fft.fft2(x) * ramp)

    def step(self, idx: torch.Tensor, update_probe: bool, refiner: PositionRefiner | None = None):
        """One PIE update from frames ``idx``; returns the batch's amplitude error sum."""
        eps = self.eps
        pos = self.pos[idx]
        if self.subpixel:
            corners = torch.floor(pos).long()
            frac = pos - corners.to(pos.dtype)
            has_frac = bool(frac.abs().max() > 1e-6)
        else:
            corners, frac, has_frac = torch.round(pos).long(), None, False
        (y0, x0, h, w), lidx = _local_windows(corners, self.window)
        region = self.obj[y0:y0 + h, x0:x0 + w]
        crop = region.reshape(-1)[lidx]
        # patch(r) = O(c + f + r): the integer crop shifted by -f (as extract_patches does).
        patch = self._shift(crop, -frac) if has_frac else crop
        psi = patch[:, None] * self.probe[None]  # (b, M, wy, wx)
        single = psi.shape[1] == 1
        wave = self.model.to_detector(psi[:, 0] if single else psi, idx)
        wave = wave[:, None] if single else wave
        mod = torch.sqrt((wave.real**2 + wave.imag**2).sum(1))
        sf = self.sqrt_f[idx, None, None]
        amp = self.amp[idx]
        # Modulus projection: keep the phase, impose the measured amplitude (all modes
        # scaled alike, the mixed-state form); unmeasured pixels keep the model's.
        ratio = amp / sf / (mod + eps)
        if self.mask is None:
            err = float(((mod * sf - amp) ** 2).sum())
        else:
            err = float((((mod * sf - amp) ** 2) * self.mask).sum())
            ratio = torch.where(self.mask, ratio, torch.ones_like(ratio))
        wave = wave * ratio[:, None]
        new = self.model.from_detector(wave[:, 0] if single else wave, idx)
        dpsi = (new[:, None] if single else new) - psi

        # Both updates from the same (pre-update) object and probe. Each frame's object
        # update is the textbook one, divided in the window's own frame and carried back by
        # the inverse (= adjoint) sub-pixel shift: dividing after the shift would put the
        # shifted numerator's ringing (a sharp pupil's edge in Fourier ptychography, a
        # probe's wrap-around at the window edge) over near-zero illumination, where rPIE's
        # small alpha amplifies it until the iteration diverges.
        num_o = (self.probe.conj()[None] * dpsi).sum(1)
        p_int = (self.probe.real**2 + self.probe.imag**2).sum(0)
        pmax = p_int.max()
        if self.rpie:
            delta_o = num_o / ((1 - self.alpha) * p_int + self.alpha * pmax + eps)
        else:
            delta_o = num_o * (self.alpha / (pmax + eps))
        delta_o = self._shift(delta_o, frac) if has_frac else delta_o
        if len(idx) > 1:
            # Mini-batch: sum the frames' updates on the canvas and divide by the batch's
            # summed gain where it exceeds one, so frames lighting the same pixel average
            # their updates instead of adding them; pixels lit by one frame get exactly the
            # sequential update. A frame's gain is its step's fraction of a full projection
            # at each pixel: ePIE |P|^2 / max|P|^2 (times alpha); rPIE |P|^2 / ((1 - alpha)
            # |P|^2 + alpha max|P|^2), which nears 1 in the probe's dim tails. Counting the
            # ePIE gain there let many frames' dim tails add up to several full projections
            # per pixel, and a batch of every frame diverged (object 1e18 within 45 epochs).
            flat = lidx.reshape(-1)
            canvas = torch.zeros(h * w, dtype=delta_o.dtype, device=delta_o.device)
            canvas.index_add_(0, flat, delta_o.reshape(-1))
            gain = p_int / ((1 - self.alpha) * p_int + self.alpha * pmax + eps) if self.rpie \
                else p_int / (pmax + eps)
            rel = gain.expand(len(idx), -1, -1)
            count = torch.zeros(h * w, dtype=rel.dtype, device=rel.device)
            count.index_add_(0, flat, rel.reshape(-1))
            delta_o = canvas / count.clamp_min(1.0)

        if update_probe:
            num_p = (patch.conj()[:, None] * dpsi).sum(0)
            o_int = (patch.real**2 + patch.imag**2).sum(0)
            omax = o_int.max()
            if self.rpie:
                delta_p = num_p / ((1 - self.beta) * o_int + self.beta * omax + eps)
            else:
                delta_p = num_p * (self.beta / (omax + eps))
        if refiner is not None:
            refiner.update(idx, patch, self.probe, dpsi)

        region += delta_o.reshape(h, w)
        if update_probe:
            self.probe += delta_p
            if self.support is not None:
                self.probe *= self.support
        return err
