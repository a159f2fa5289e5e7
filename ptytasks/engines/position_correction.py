"""Scan-position refinement for the PIE engines (least-squares / gradient form).

For frame ``i`` the exit wave is ``psi = P * O(p_i + r)``. If the true corner is
``p_i + s``, then to first order ``P O(p_i + s + r) ~ psi + s . P grad O``, and the
projection step asks for ``psi + dpsi``. The shift that best explains the correction is the
2x2 least-squares solution

    A s = b,   A_jk = Re sum conj(P d_j O) P d_k O,   b_j = Re sum conj(P d_j O) dpsi,

the update used by pty-chi's "gradient" position correction and by Dwivedi et al. (2018);
it is cheap (no extra FFTs) and, with a per-visit limit and the mean removed, robust.
"""

from __future__ import annotations

import torch

from ptytasks.engines.options import PositionCorrectionOptions
from ptytasks.physics.shifts import extract_patches


def patch_gradients(patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central-difference gradients ``(d/dy, d/dx)`` of object patches ``(b, ny, nx)``.

    Finite differences rather than Fourier derivatives: a crop of the object is not
    periodic, and the wrap-around edge would dominate a spectral derivative.
    """
    gy, gx = torch.gradient(patch, dim=(-2, -1))
    return gy, gx


def least_squares_shift(
    patch: torch.Tensor, probe: torch.Tensor, dpsi: torch.Tensor, *, eps: float = 1e-6
) -> torch.Tensor:
    """Per-frame position corrections ``(b, 2)`` (pixels, ``(dy, dx)``).

    Parameters
    ----------
    patch : complex ``(b, ny, nx)``
        Object patches ``O(p_i + r)`` at the current positions.
    probe : complex ``(M, ny, nx)``
        Probe modes.
    dpsi : complex ``(b, M, ny, nx)``
        Exit-wave corrections from the projection step (projected minus current).
    eps : float
        Relative Tikhonov term on the 2x2 system (flat patches give no shift, not NaN).

    Returns
    -------
    real tensor ``(b, 2)``: add to the window corners.
    """
    gy, gx = patch_gradients(patch)
    # (b, M, 2, ny, nx): P d_j O for each mode and axis.
    pg = probe[None, :, None] * torch.stack((gy, gx), dim=1)[:, None]
    a = torch.einsum("bmjyx,bmkyx->bjk", pg.conj(), pg).real
    rhs = torch.einsum("bmjyx,bmyx->bj", pg.conj(), dpsi).real
    tr = a.diagonal(dim1=-2, dim2=-1).sum(-1)
    reg = eps * tr[:, None, None] * torch.eye(2, dtype=a.dtype, device=a.device) + 1e-30
    return torch.linalg.solve(a + reg, rhs[..., None])[..., 0]


class PositionRefiner:
    """Applies :func:`least_squares_shift` inside a PIE loop with the safety limits.

    Parameters
    ----------
    positions : real tensor ``(n, 2)``
        The engine's working positions; updated in place.
    options : PositionCorrectionOptions
    """

    def __init__(self, positions: torch.Tensor, options: PositionCorrectionOptions):
        self.options = options
        self.initial = positions.detach().clone()
        self.positions = positions
        self.history: list[float] = []

    def active(self, epoch: int) -> bool:
        o = self.options
        return epoch >= o.start and (epoch - o.start) % max(1, o.every) == 0

    def search_due(self, epoch: int) -> bool:
        o = self.options
        k = epoch - o.start
        return o.search_radius > 0 and o.search_every > 0 and k > 0 and k % o.search_every == 0

    def update(self, idx: torch.Tensor, patch, probe, dpsi) -> None:
        """Move the positions of frames ``idx`` by the limited least-squares shift."""
        o = self.options
        shift = o.step * least_squares_shift(patch, probe, dpsi)
        # A diverged object gives NaN shifts, and a NaN corner is cut as an out-of-range
        # window (an IndexError far from the cause): such a frame stays where it is.
        shift = torch.nan_to_num(shift, nan=0.0, posinf=0.0, neginf=0.0)
        shift = shift.clamp(-o.max_shift, o.max_shift).to(self.positions.dtype)
        self.positions[idx] += shift

    def end_epoch(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        """Remove the mean drift, apply the displacement limit, keep windows in bounds.

        Parameters
        ----------
        lower, upper : tensors ``(2,)``
            Allowed range of the window corners (inside the object array).
        """
        o = self.options
        delta = self.positions - self.initial
        if o.fix_mean:
            delta -= delta.mean(0, keepdim=True)
        if o.max_displacement is not None:
            delta = delta.clamp(-o.max_displacement, o.max_displacement)
        new = torch.minimum(torch.maximum(self.initial + delta, lower), upper)
        self.positions.copy_(new)
        self.history.append(float((new - self.initial).norm(dim=1).pow(2).mean().sqrt()))


def patch_errors(patches, probe, model, amp, sqrt_f, idx, mask=None) -> torch.Tensor:
    """Amplitude errors ``sum(| |Psi| - sqrt(I) |^2)`` of candidate object patches.

    Parameters
    ----------
    patches : complex ``(b, K, wy, wx)`` or ``(b, K, S, wy, wx)``
        ``K`` candidate patches for each of the frames ``idx`` (``b`` of them); with ``S``
        slices the candidates go through the model's multislice propagation.
    mask : bool ``(wy, wx)``, optional
        Detector pixels that count (the engines' detector mask): a beamstop's or a hot
        pixel's reading must not pull a frame off its place.

    Returns
    -------
    real ``(b, K)``.
    """
    b, k = patches.shape[:2]
    frames = idx.repeat_interleave(k)
    single = probe.shape[0] == 1
    # the model's own exit waves: thin (probe x patch) or through every slice
    psi = model.exit_from_patches(probe[0] if single else probe,
                                  patches.reshape(b * k, *patches.shape[2:]))  # fmt: skip
    wave = model.to_detector(psi, frames)
    wave = wave[:, None] if single else wave
    mod = torch.sqrt((wave.real**2 + wave.imag**2).sum(1)) * sqrt_f[frames, None, None]
    sq = (mod - amp[frames]) ** 2
    return (sq if mask is None else sq * mask).sum((-2, -1)).reshape(b, k)


def grid_search(obj, probe, positions, model, amp, sqrt_f, *, radius: int,
                lower: torch.Tensor, upper: torch.Tensor, chunk: int = 8,
                mask: torch.Tensor | None = None, subpixel: bool = True) -> int:
    """Move each frame to the best whole-pixel offset within ``radius``; in place.

    Candidates ``p + (dy, dx)`` for ``|dy|, |dx| <= radius`` are scored by
    :func:`patch_errors` with the current object and probe; the zero offset is a
    candidate, so no frame gets worse; only the detector pixels in ``mask`` count. One
    enlarged crop per frame (sub-pixel shifted once)
    supplies all its candidates as sub-windows; the object is zero-padded by ``radius`` so
    candidates beyond the canvas score badly, and results are clamped to ``lower`` ..
    ``upper``. Returns how many frames moved.
    """
    r = int(radius)
    wy, wx = probe.shape[-2:]
    padded = torch.nn.functional.pad(obj, (r, r, r, r))  # a thick object: every slice
    steps = torch.arange(-r, r + 1, dtype=positions.dtype, device=positions.device)
    offsets = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), -1).reshape(-1, 2)
    moved = 0
    for idx in torch.arange(positions.shape[0], device=positions.device).split(chunk):
        # Corner p - r on the object is corner p on the padded object.
        # scored as the engine models a frame: at the rounded corner without subpixel
        pos = positions[idx] if subpixel else torch.round(positions[idx])
        big = extract_patches(padded, pos, (wy + 2 * r, wx + 2 * r), subpixel=subpixel)
        yd = big.dim() - 2  # the window's y axis (x follows; unfold appends its window)
        cands = big.unfold(yd, wy, 1).unfold(yd + 1, wx, 1)  # (b, [S,] 2r+1, 2r+1, wy, wx)
        if cands.dim() == 6:  # slices: (b, (2r+1)^2, S, wy, wx), dy-major like the thin case
            cands = cands.flatten(2, 3).movedim(1, 2)
        else:
            cands = cands.reshape(len(idx), -1, wy, wx)
        err = patch_errors(cands, probe, model, amp, sqrt_f, idx, mask)
        best = err.argmin(1)
        new = positions[idx] + offsets[best]
        positions[idx] = torch.minimum(torch.maximum(new, lower), upper)
        moved += int((offsets[best].abs().sum(1) > 0).sum())
    return moved


def rms_position_error(estimate, truth, *, remove_mean: bool = True) -> float:
    """RMS distance (pixels) between two position sets ``(n, 2)``.

    ``remove_mean`` ignores a common translation, which the data cannot determine.
    """
    d = torch.as_tensor(estimate, dtype=torch.float64) - torch.as_tensor(truth, dtype=torch.float64)
    if remove_mean:
        d = d - d.mean(0, keepdim=True)
    return float(d.norm(dim=1).pow(2).mean().sqrt())
