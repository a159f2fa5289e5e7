"""Error metrics of a complex reconstruction against a reference (e.g. the ground truth).

All take 2-D ``(y, x)`` numpy arrays or torch tensors and an optional mask (bool or float
weights on the reference grid, e.g. the illuminated region); masked sums are weighted by the
mask values. Phases are in radians.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from ptytasks.metrics.align import align as _align
from ptytasks.metrics.align import global_scale, mask_weights, to_numpy
from ptytasks.metrics.frc import frc, taper_mask, tukey_window


def _aligned(recon, reference, mask, do_align: bool):
    """(aligned recon, reference, weights, info); without alignment only ``c`` is fitted."""
    r = to_numpy(reference)
    w = mask_weights(mask, r.shape)
    if do_align:
        out, info = _align(recon, r, w)
        return out.astype(np.complex128), r.astype(np.complex128), w, info
    x = to_numpy(recon).astype(np.complex128)
    c = global_scale(x, r, w)
    info = {
        "shift_px": np.zeros(2),
        "ramp": np.zeros(2),
        "scale": abs(c),
        "phase": float(np.angle(c)),
    }
    return c * x, r.astype(np.complex128), w, info


def complex_error(recon, reference, mask=None, *, align: bool = True) -> float:
    """Relative error ``||c x - ref|| / ||ref||`` over the mask (dimensionless).

    ``c`` is the least-squares complex scalar, so the error is invariant to a global phase
    and amplitude scale. With ``align=True`` (default) shift and phase ramp are removed too
    (:func:`ptytasks.metrics.align.align`); ``align=False`` fits ``c`` only.
    """
    x, r, w, _ = _aligned(recon, reference, mask, align)
    return float(np.sqrt(np.sum(w * np.abs(x - r) ** 2) / np.sum(w * np.abs(r) ** 2)))


def _range(ref: np.ndarray, w: np.ndarray) -> float:
    v = ref[w > 0]
    rng = float(v.max() - v.min())
    if rng > 1e-12 * max(1.0, float(np.abs(v).max())):
        return rng
    peak = float(np.abs(v).max())
    return peak if peak > 0 else 1.0


def psnr(image, reference, *, data_range: float | None = None, mask=None) -> float:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` of two real images, in dB.

    Parameters
    ----------
    image, reference : (ny, nx) real arrays or tensors
    data_range : float, optional
        ``R`` in the units of the images. Default: the reference's ``max - min`` over the
        mask (its peak ``|value|`` when that range is zero, then 1).
    mask : optional weights; the MSE is the weighted mean.

    Returns
    -------
    float; ``inf`` for identical images.
    """
    a = to_numpy(image).astype(np.float64)
    b = to_numpy(reference).astype(np.float64)
    w = mask_weights(mask, b.shape)
    rng = _range(b, w) if data_range is None else float(data_range)
    mse = np.sum(w * (a - b) ** 2) / np.sum(w)
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(rng**2 / mse))


def ssim(
    image, reference, *, data_range: float | None = None, mask=None, win_size: int = 7
) -> float:
    """Structural similarity of two real images (1 for identical), mean over the mask.

    Uses :func:`skimage.metrics.structural_similarity` (uniform ``win_size`` window) and
    averages its SSIM map weighted by the mask; ``data_range`` as in :func:`psnr`.
    """
    a = to_numpy(image).astype(np.float64)
    b = to_numpy(reference).astype(np.float64)
    w = mask_weights(mask, b.shape)
    rng = _range(b, w) if data_range is None else float(data_range)
    _, smap = structural_similarity(b, a, data_range=rng, win_size=win_size, full=True)
    return float(np.sum(w * smap) / np.sum(w))


def phase_ssim(phase, phase_ref, *, mask=None, win_size: int = 7) -> float:
    """SSIM of two phase maps (radians) with the reference's lowest phase as black.

    SSIM's luminance term compares local means against ``(0.01 R)^2``: it assumes images in
    ``[0, R]`` with a meaningful zero. A phase has no zero of its own, and one referenced to
    its mean crosses zero inside the object, where the term collapses for local offsets of
    a few hundredths of a radian. Both maps are therefore shifted by the same constant, so
    the reference spans ``[0, R]`` over the mask (the min-max normalisation of the papers,
    applied to both alike); differences, and so the PSNR, are unchanged.
    """
    p = to_numpy(phase).astype(np.float64)
    r = to_numpy(phase_ref).astype(np.float64)
    w = mask_weights(mask, r.shape)
    lo = float(r[w > 0].min())
    return ssim(p - lo, r - lo, mask=w, win_size=win_size)


def amplitude_phase(recon, reference, mask=None, *, align: bool = True):
    """Amplitudes and phases of the aligned reconstruction and of the reference.

    The reference phase is measured relative to its mask-weighted mean phasor (so a phase
    object does not straddle the +-pi wrap), and the reconstruction's phase is that plus the
    wrapped phase difference: wraps in the reference therefore never appear as errors.
    ``align=False`` only fits the global complex scalar.

    Returns
    -------
    amp, amp_ref, phase, phase_ref : (ny, nx) float64 arrays (phases in radians)
    """
    x, r, w, _ = _aligned(recon, reference, mask, align)
    return _amp_phase(x, r, w)


def _amp_phase(x, r, w):
    r0 = r * np.exp(-1j * np.angle(np.sum(w * r)))
    phase_ref = np.angle(r0)
    phase = phase_ref + np.angle(x * np.conj(r))
    return np.abs(x), np.abs(r), phase, phase_ref


#: The FRC against a noise-free truth reads its crossing of 0.5 (the analogue of 1/7
#: between noisy halves; metrics version 3: before, the half-data threshold, half-bit by
#: default, was applied to it too, crediting resolution the data do not hold).
TRUTH_FRC_THRESHOLD = 0.5


def quality_report(
    recon,
    reference,
    mask=None,
    *,
    pixel_size: float | None = None,
    threshold: str | float = TRUTH_FRC_THRESHOLD,
    taper: float = 8.0,
    band_limit: float | None = None,
) -> dict[str, float]:
    """All metrics of ``recon`` against ``reference`` after one alignment.

    Parameters
    ----------
    recon, reference : (ny, nx) complex arrays or tensors
    mask : optional bool/float region (e.g. illuminated area) on the reference grid
    pixel_size : float, optional
        Metres per pixel, for ``frc_resolution_m``.
    threshold : FRC threshold ("halfbit", "onebit", "1/7" or a float); default 0.5, the
        analogue of 1/7 against a noise-free truth (:data:`TRUTH_FRC_THRESHOLD`).
    taper : float
        Width (pixels) of the soft edge put on the mask for the FRC.
    band_limit : float, optional
        Cycles per pixel: the FRC's crossing is searched only below it (the band the data
        measured, e.g. Fourier ptychography's synthetic aperture,
        ``Modality.band_limit``); beyond it a reference low-passed to the band and a
        reconstruction that holds nothing there agree or disagree by rounding alone.

    Returns
    -------
    dict of floats: ``complex_error``; ``amp_psnr`` (dB), ``amp_ssim``, ``phase_psnr`` (dB),
    ``phase_ssim`` (:func:`phase_ssim`; data range: the reference's range over the mask);
    ``frc_resolution``
    (cycles/pixel of the crossing, Nyquist 0.5 if none), ``frc_resolution_m`` (metres per
    period, NaN without ``pixel_size``); the alignment ``shift_y_px``, ``shift_x_px``,
    ``ramp_y``, ``ramp_x`` (rad/px), ``scale``, ``phase_offset`` (rad).
    """
    x, r, w, info = _aligned(recon, reference, mask, True)
    amp, amp_ref, ph, ph_ref = _amp_phase(x, r, w)
    err = np.sqrt(np.sum(w * np.abs(x - r) ** 2) / np.sum(w * np.abs(r) ** 2))
    if mask is None:
        box, win = (slice(None), slice(None)), tukey_window(r.shape)
    else:
        # FRC on the mask's bounding box with a soft edge: zero padding adds no information
        # and a hard outline would correlate the two spectra at high frequency.
        rows = np.flatnonzero(np.any(w > 0, axis=1))
        cols = np.flatnonzero(np.any(w > 0, axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        win = w[box] * taper_mask(w[box] > 0, taper)
    # Each image's windowed mean removed (as half_data_frc does): the window's own spectrum,
    # carried by both means, would otherwise correlate them out to ~1/taper c/px -- a
    # uniform object scored ~0.1 c/px against the grid's truths.
    xb, rb = x[box], r[box]
    xb = xb - np.sum(win * xb) / np.sum(win)
    rb = rb - np.sum(win * rb) / np.sum(win)
    res = frc(xb, rb, window=win, band_limit=band_limit).resolution(threshold, pixel_size)
    return {
        "complex_error": float(err),
        "amp_psnr": psnr(amp, amp_ref, mask=w),
        "amp_ssim": ssim(amp, amp_ref, mask=w),
        "phase_psnr": psnr(ph, ph_ref, mask=w),
        "phase_ssim": phase_ssim(ph, ph_ref, mask=w),
        "frc_resolution": res.freq,
        "frc_resolution_m": float("nan") if res.length_m is None else res.length_m,
        "shift_y_px": float(info["shift_px"][0]),
        "shift_x_px": float(info["shift_px"][1]),
        "ramp_y": float(info["ramp"][0]),
        "ramp_x": float(info["ramp"][1]),
        "scale": float(info["scale"]),
        "phase_offset": float(info["phase"]),
    }
