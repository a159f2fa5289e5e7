"""Sub-pixel shifts and patch extraction/insertion, differentiable in the positions.

A patch of frame ``i`` is ``O[p_i + r]`` for ``r`` over the probe window (positions are the
window's top-left corner, ``(y, x)`` object pixels; ``docs/conventions.md``). The integer
part of ``p_i`` selects a crop; the fractional part is applied as a Fourier phase ramp, so
the gradient of any loss reaches the positions.
"""

from __future__ import annotations

import math

import torch

from ptytasks.physics.fft import fft2u, freq_grid, ifft2u, real_dtype


def window_freqs(n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Shift-ramp frequencies (cycles per sample, ``fft`` order) for a *spectrum* window.

    A window cut from a centred spectrum (:func:`~ptytasks.physics.fft.fft2c`) is the
    spectrum of an image whose origin is its pixel 0 (``ifft2c`` does not shift the image
    axis). Shifting the window by a fraction ``d`` multiplies that image by a linear phase
    ``exp(-2 pi i d x / n)`` that must run continuously over the image's pixels ``0 .. n-1``
    and wrap at its edge, where the field of view ends. With ``fftfreq`` the wrap falls at
    pixel ``n / 2``: a ``2 pi d`` phase step through the middle of every tilted image (a
    cross on measured FPM images). This grid, ``0.5 - ((n - u) mod n) / n``, differs from
    ``fftfreq`` by a constant phase per half and moves the wrap to the edge.
    """
    u = torch.arange(n, dtype=dtype, device=device)
    return 0.5 - torch.remainder(n - u, n) / n


def shift_ramp(
    shape: tuple[int, int], shift: torch.Tensor, *, dtype: torch.dtype = torch.complex64,
    spectrum: bool = False,
) -> torch.Tensor:
    """Phase ramp ``exp(-2 pi i (fy dy + fx dx))`` (unshifted frequency order).

    Parameters
    ----------
    shape : (ny, nx)
    shift : tensor ``(..., 2)``
        ``(dy, dx)`` in pixels.
    spectrum : bool
        The shifted arrays are windows of a centred spectrum: :func:`window_freqs`
        instead of ``fftfreq`` (the image-domain ramp wraps at the image edge).

    Returns
    -------
    complex tensor ``(..., ny, nx)``.
    """
    rdt = real_dtype(dtype)
    if spectrum:
        fy = window_freqs(shape[0], dtype=rdt, device=shift.device)[:, None]
        fx = window_freqs(shape[1], dtype=rdt, device=shift.device)[None, :]
    else:
        fy, fx = freq_grid(shape, 1.0, dtype=rdt, device=shift.device)
    s = shift.to(rdt)
    phase = -2 * math.pi * (s[..., 0, None, None] * fy + s[..., 1, None, None] * fx)
    return torch.polar(torch.ones_like(phase), phase)


def fourier_shift(x: torch.Tensor, shift: torch.Tensor, *, spectrum: bool = False) -> torch.Tensor:
    """Shift images by ``shift`` pixels with periodic boundaries: ``out(r) = x(r - shift)``.

    Parameters
    ----------
    x : tensor ``(..., ny, nx)``, real or complex
    shift : tensor ``(..., 2)``
        ``(dy, dx)`` in pixels, broadcast against ``x``'s leading dims.
    spectrum : bool
        ``x`` are windows of a centred spectrum (:func:`window_freqs`).
    """
    cdt = (
        x.dtype
        if x.is_complex()
        else {torch.float64: torch.complex128}.get(x.dtype, torch.complex64)
    )
    xc = x.to(cdt)
    out = ifft2u(fft2u(xc) * shift_ramp(x.shape[-2:], shift, dtype=cdt, spectrum=spectrum))
    return out if x.is_complex() else out.real


def split_positions(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer corner (long, no grad) and fractional remainder in [0, 1) (keeps grad)."""
    whole = torch.floor(positions.detach())
    return whole.long(), positions - whole


def check_windows(corners: torch.Tensor, window: tuple[int, int], canvas: tuple[int, int]) -> None:
    """Raise ``ValueError`` unless every ``window`` at integer ``corners`` lies in ``canvas``.

    One device-to-host read (each ``int()`` of a CUDA tensor would wait for the device).
    """
    if not len(corners):
        return
    wy, wx = window
    ny, nx = canvas
    lo_y, lo_x, hi_y, hi_x = torch.cat([corners.min(0).values, corners.max(0).values]).tolist()
    ymax, xmax = hi_y + wy, hi_x + wx
    if min(lo_y, lo_x) < 0 or ymax > ny or xmax > nx:
        raise ValueError(
            f"scan positions put the {wy}x{wx} probe window outside the {ny}x{nx} object: "
            f"corners span y [{lo_y}, {ymax}), x [{lo_x}, {xmax}); enlarge the object or "
            "shift the positions"
        )


def _window_index(
    corners: torch.Tensor, window: tuple[int, int], canvas: tuple[int, int], check: bool = True
) -> torch.Tensor:
    """Flat indices ``(n, wy, wx)`` of the windows at integer ``corners`` in ``canvas``."""
    if check:
        check_windows(corners, window, canvas)
    wy, wx = window
    nx = canvas[1]
    ry = torch.arange(wy, device=corners.device)
    rx = torch.arange(wx, device=corners.device)
    rows = corners[:, 0, None, None] + ry[None, :, None]
    cols = corners[:, 1, None, None] + rx[None, None, :]
    return rows * nx + cols


def extract_patches(
    obj: torch.Tensor, positions: torch.Tensor, window: tuple[int, int], *, subpixel: bool = True,
    spectrum: bool = False, check: bool = True,
) -> torch.Tensor:
    """Patches ``O[p_i + r]`` of the object under each probe window.

    Parameters
    ----------
    obj : tensor ``(..., ny, nx)``
        Object (leading dims, e.g. slices or modes, are kept).
    positions : tensor ``(n, 2)``
        Window corners ``(y, x)`` in object pixels; gradients flow to them when
        ``subpixel`` is true.
    window : (wy, wx)
        Probe window shape.
    spectrum : bool
        ``obj`` is a centred spectrum and the windows are pupil crops (Fourier
        ptychography): sub-pixel shifts use :func:`window_freqs`.
    check : bool
        Check that the windows lie in the object (:func:`check_windows`: one device read);
        ``False`` where the caller has checked these corners already.

    Returns
    -------
    tensor ``(n, ..., wy, wx)``.
    """
    corners, frac = split_positions(positions)
    idx = _window_index(corners, window, obj.shape[-2:], check)
    lead = obj.shape[:-2]
    flat = obj.reshape(*lead, -1)
    patches = flat[..., idx]  # (..., n, wy, wx)
    patches = patches.movedim(-3, 0) if lead else patches
    if subpixel:
        # patch(r) = O(c + f + r): a shift by -f of the integer crop.
        patches = fourier_shift(patches, -frac.reshape(frac.shape[0], *([1] * len(lead)), 2),
                                spectrum=spectrum)
    return patches


def insert_patches(
    patches: torch.Tensor,
    positions: torch.Tensor,
    canvas: tuple[int, int],
    *,
    subpixel: bool = True,
    spectrum: bool = False,
) -> torch.Tensor:
    """Adjoint of :func:`extract_patches` (with the same ``subpixel`` and ``spectrum``): sum
    the patches into a canvas.

    Parameters
    ----------
    patches : tensor ``(n, ..., wy, wx)``
    positions : tensor ``(n, 2)``
        Window corners, object pixels.
    canvas : (ny, nx)
        Object shape.

    Returns
    -------
    tensor ``(..., ny, nx)`` holding ``sum_i patch_i`` placed at ``p_i``.
    """
    corners, frac = split_positions(positions)
    lead = patches.shape[1:-2]
    if subpixel:
        patches = fourier_shift(patches, frac.reshape(frac.shape[0], *([1] * len(lead)), 2),
                                spectrum=spectrum)
    idx = _window_index(corners, patches.shape[-2:], canvas)
    vals = patches.movedim(0, -3) if lead else patches  # (..., n, wy, wx)
    out = torch.zeros(*lead, canvas[0] * canvas[1], dtype=patches.dtype, device=patches.device)
    out = out.index_add(-1, idx.reshape(-1), vals.reshape(*lead, -1))
    return out.reshape(*lead, *canvas)


def coverage(
    positions: torch.Tensor,
    window: tuple[int, int],
    canvas: tuple[int, int],
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of ``weight`` (default ones) over all windows: how often each pixel is seen."""
    w = torch.ones(window) if weight is None else weight
    w = w.to(positions.device)
    stack = w.expand(positions.shape[0], *w.shape)
    return insert_patches(stack, positions, canvas, subpixel=False)
