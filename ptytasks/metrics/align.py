"""Alignment of a reconstruction to a reference before comparing them.

A ptychographic reconstruction is only defined up to a few ambiguities: a global complex
factor, a linear phase ramp (a shift of the far-field pattern) and a translation (the probe
and object may move together). :func:`align` removes all of them over an optional mask
(e.g. the illuminated region), following one formula::

    aligned = scale * exp(i phase) * subpixel_shift(recon * conj(phase_ramp(ramp)), shift_px)

Images are 2-D ``(y, x)`` (``docs/conventions.md``); numpy arrays or torch tensors are
accepted and numpy arrays are returned. Work is done in float64/complex128.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares
from skimage.registration import phase_cross_correlation


def to_numpy(x) -> np.ndarray:
    """A numpy view/copy of an array-like or torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):  # torch tensor; resolve_conj because .numpy() refuses conj views
        x = x.detach().cpu()
        x = x.resolve_conj() if x.is_complex() else x
        import torch  # (imported already: x is a tensor)

        # NumPy has no bfloat16 / complex32: widened
        wide = {torch.bfloat16: torch.float32, torch.complex32: torch.complex64}.get(x.dtype)
        x = x if wide is None else x.to(wide)
        return x.numpy()
    return np.asarray(x)


def _image(x, name: str) -> np.ndarray:
    a = to_numpy(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (y, x) image, got shape {a.shape}")
    return a


def mask_weights(mask, shape: tuple[int, int]) -> np.ndarray:
    """Float64 weights from a boolean or soft mask (``None`` -> all ones)."""
    if mask is None:
        return np.ones(shape)
    w = to_numpy(mask).astype(np.float64)
    if w.shape != tuple(shape):
        raise ValueError(f"mask shape {w.shape} does not match image shape {shape}")
    if not np.any(w > 0):
        raise ValueError("mask selects no pixels")
    return w


def subpixel_shift(x, shift) -> np.ndarray:
    """Shift an image by ``shift = (dy, dx)`` pixels, periodic: ``out(r) = x(r - shift)``.

    The shift is a Fourier phase ramp (sign convention of ``docs/conventions.md``), exact
    for band-limited periodic images; non-periodic borders ring, so compare over a mask
    that keeps away from the edges.
    """
    a = to_numpy(x)
    fy = np.fft.fftfreq(a.shape[-2])[:, None]
    fx = np.fft.fftfreq(a.shape[-1])[None, :]
    ramp = np.exp(-2j * np.pi * (fy * shift[0] + fx * shift[1]))
    out = np.fft.ifft2(np.fft.fft2(a) * ramp)
    return out if np.iscomplexobj(a) else out.real


def phase_ramp(shape: tuple[int, int], ramp) -> np.ndarray:
    """``exp(i (ramp_y (y - ny//2) + ramp_x (x - nx//2)))``; ``ramp`` in radians per pixel.

    The origin is the array centre so that removing a ramp barely changes the mean phase.
    """
    y = np.arange(shape[0])[:, None] - shape[0] // 2
    x = np.arange(shape[1])[None, :] - shape[1] // 2
    return np.exp(1j * (ramp[0] * y + ramp[1] * x))


def global_scale(recon, reference, mask=None) -> complex:
    """Complex scalar ``c`` minimising ``sum w |c x - ref|^2`` (``w`` the mask weights).

    ``c = sum w conj(x) ref / sum w |x|^2``; ``|c|`` is the amplitude scale, ``arg c`` the
    global phase (radians) to apply to ``recon``. Returns 0 if ``recon`` is zero on the mask.
    """
    x = _image(recon, "recon")
    r = _image(reference, "reference")
    w = mask_weights(mask, r.shape)
    den = np.sum(w * np.abs(x) ** 2)
    return complex(np.sum(w * np.conj(x) * r) / den) if den > 0 else 0j


def _model(x, w, r, shift, ramp):
    """Variable projection: apply shift/ramp, solve c in closed form, weighted residual."""
    y = x * np.conj(phase_ramp(x.shape, ramp)) if np.any(ramp) else x
    y = subpixel_shift(y, shift) if np.any(shift) else y
    den = np.sum(w * np.abs(y) ** 2)
    c = np.sum(w * np.conj(y) * r) / den if den > 0 else 0.0
    return y, c


def _refine(x, r, w, shift, ramp, fit_shift: bool, fit_ramp: bool):
    """Joint least-squares refinement of (shift, ramp) from a starting point.

    Fitting the complex residual (not the phase difference) makes the fit immune to phase
    wraps; the coarse estimates only need to land within ~0.5 px / bin of the optimum.
    """
    shift = np.asarray(shift, float)
    ramp = np.asarray(ramp, float)
    if not (fit_shift or fit_ramp):
        return shift, ramp
    sel = w > 0
    sw = np.sqrt(w[sel])
    rs = r[sel]

    def unpack(p):
        s = p[:2] if fit_shift else shift
        a = p[-2:] if fit_ramp else ramp
        return s, a

    def resid(p):
        y, c = _model(x, w, r, *unpack(p))
        d = sw * (c * y[sel] - rs)
        return np.concatenate([d.real, d.imag])

    p0 = np.concatenate([shift] * fit_shift + [ramp] * fit_ramp)
    sol = least_squares(resid, p0, method="lm", x_scale="jac", xtol=1e-12, ftol=1e-12)
    return unpack(sol.x)


def _centred(u, w):
    """Weighted, mean-removed image: keeps the mask's own outline out of the correlation."""
    return w * (u - np.sum(w * u) / np.sum(w))


def _featureless(c, u) -> bool:
    """Whether ``c`` (``u`` centred) is zero to rounding: ``u`` constant (or zero) under
    the mask."""
    return float(np.max(np.abs(c))) <= 1e-9 * float(np.max(np.abs(u)))


def register_shift(
    recon,
    reference,
    mask=None,
    *,
    upsample: int = 20,
    ramp_invariant: bool = False,
    refine: bool = True,
) -> np.ndarray:
    """Sub-pixel shift ``(dy, dx)`` (pixels) that moves ``recon`` onto ``reference``.

    ``subpixel_shift(recon, d)`` then best matches ``reference``. Coarse estimate: upsampled
    cross-correlation (:func:`skimage.registration.phase_cross_correlation`) of the mask-
    weighted, mean-removed images, deliberately not whitened (phase normalisation lets the
    mask outline, common to both, pull the peak to zero); then a least-squares refinement of
    the complex residual (``refine``).

    Parameters
    ----------
    recon, reference : (ny, nx) arrays or tensors, real or complex
    mask : (ny, nx) bool or float, optional
        Weights on the reference grid (e.g. the illuminated region).
    upsample : int
        Upsampling of the cross-correlation peak (precision 1/upsample px before refining).
    ramp_invariant : bool
        Correlate the neighbour products ``x(r) conj(x(r - e))`` instead of the images: they
        carry a phase ramp only as a constant factor, so a ramp cannot bias the peak.
    refine : bool
        Least-squares refinement with no ramp (reaches ~1e-4 px on clean data); use
        :func:`align` when a ramp is present too.

    Returns
    -------
    (2,) float64 array, pixels.
    """
    x = _image(recon, "recon").astype(np.complex128)
    r = _image(reference, "reference").astype(np.complex128)
    w = mask_weights(mask, r.shape)
    u, v = (_neighbour_products(x, w), _neighbour_products(r, w)) if ramp_invariant else (x, r)
    cu, cv = _centred(u, w), _centred(v, w)
    if _featureless(cu, u) or _featureless(cv, v):
        # a flat image (e.g. a uniform start scored against the truth) holds no shift:
        # the correlation would be all zeros and skimage warns and returns an arbitrary peak
        return np.zeros(2)
    s, _, _ = phase_cross_correlation(cv, cu, upsample_factor=upsample, normalization=None)
    if refine:
        s, _ = _refine(x, r, w, s, (0.0, 0.0), True, False)
    return np.asarray(s, float)


def _neighbour_products(x, w):
    """``x conj(x shifted by one pixel)`` along y plus along x, each de-phased.

    A ramp ``exp(i a.r)`` multiplies each product by the constant ``exp(i a_j)``; removing
    each term's weighted mean phase makes the sum ramp-invariant.
    """
    out = np.zeros_like(x)
    for axis in (0, 1):
        u = x * np.conj(np.roll(x, 1, axis=axis))
        out += u * np.exp(-1j * np.angle(np.sum(w * u)))
    return out


def estimate_ramp(recon, reference, mask=None, *, pad: int = 4, refine: bool = True) -> np.ndarray:
    """Linear phase ramp ``(ramp_y, ramp_x)`` (radians per pixel) of ``recon`` vs ``reference``.

    ``recon * conj(phase_ramp(shape, ramp))`` then best matches ``reference`` (up to a
    complex scalar). Coarse estimate: the peak of ``|FFT(w ref conj(recon))|`` zero-padded
    ``pad`` times with a parabolic peak fit (the cross-correlation peak in Fourier space, so
    phase wraps do not matter), then a least-squares refinement of the complex residual.
    Images must already be registered in position.
    """
    x = _image(recon, "recon").astype(np.complex128)
    r = _image(reference, "reference").astype(np.complex128)
    w = mask_weights(mask, r.shape)
    a = _coarse_ramp(x, r, w, pad)
    if refine:
        _, a = _refine(x, r, w, (0.0, 0.0), a, False, True)
    return np.asarray(a, float)


def _coarse_ramp(x, r, w, pad: int) -> np.ndarray:
    ny, nx = r.shape
    # z ~ |ref|^2 exp(-i a.r) when x = ref exp(i a.r): a spectral peak at f = -a / (2 pi)
    z = w * r * np.conj(x)
    spec = np.abs(np.fft.fft2(z, s=(pad * ny, pad * nx)))
    k = np.unravel_index(np.argmax(spec), spec.shape)
    f = np.zeros(2)
    for ax, m in enumerate(spec.shape):
        lo, mid, hi = (
            spec[(k[0] + d) % m, k[1]] if ax == 0 else spec[k[0], (k[1] + d) % m]
            for d in (-1, 0, 1)
        )
        den = lo - 2 * mid + hi
        off = 0.5 * (lo - hi) / den if den != 0 else 0.0
        f[ax] = np.fft.fftfreq(m)[k[ax]] + off / m
    # The ramp origin is the array centre; an offset there only changes the global phase.
    return -2 * np.pi * f


def align(
    recon,
    reference,
    mask=None,
    *,
    shift: bool = True,
    ramp: bool = True,
    scale: bool = True,
    phase: bool = True,
    upsample: int = 20,
):
    """Align a reconstruction to a reference (translation, phase ramp, complex scale).

    ``aligned = scale * exp(i phase) * subpixel_shift(recon * conj(phase_ramp(ramp)), shift)``
    with every parameter fitted by weighted least squares over ``mask``. Coarse estimates
    (ramp-invariant cross-correlation, then the Fourier-space cross-correlation peak of the
    complex ratio for the ramp) seed a joint refinement of shift and ramp on the complex
    residual, with the complex scalar solved in closed form at every step.

    Parameters
    ----------
    recon, reference : (ny, nx) arrays or tensors
        Complex fields (or real images: then no ramp and a real scale are fitted).
    mask : (ny, nx) bool or float, optional
        Weights on the reference grid, e.g. the illuminated region. Keep it away from the
        array border when the images are not periodic (Fourier shifts ring there).
    shift, ramp, scale, phase : bool
        Which ambiguities to remove. The geometry fit always allows a free complex scalar;
        ``scale``/``phase`` only decide whether its modulus/argument is applied.
    upsample : int
        Cross-correlation upsampling of the coarse shift.

    Returns
    -------
    aligned : ndarray, same shape, dtype of ``recon`` (at least complex64 when complex)
    info : dict
        ``shift_px`` (2,) pixels applied to ``recon``; ``ramp`` (2,) rad/px removed from
        ``recon`` (origin at the array centre); ``scale`` (float) and ``phase`` (float, rad)
        applied; ``error`` the masked complex relative error ``||aligned - ref|| / ||ref||``.
    """
    x0 = _image(recon, "recon")
    r0 = _image(reference, "reference")
    if x0.shape != r0.shape:
        raise ValueError(f"shape mismatch: recon {x0.shape} vs reference {r0.shape}")
    real = not (np.iscomplexobj(x0) or np.iscomplexobj(r0))
    ramp = ramp and not real
    x, r = x0.astype(np.complex128), r0.astype(np.complex128)
    w = mask_weights(mask, r.shape)
    s = np.zeros(2)
    a = np.zeros(2)
    if shift:
        s = register_shift(x, r, w, upsample=upsample, ramp_invariant=ramp, refine=False)
    if ramp:
        a = _coarse_ramp(subpixel_shift(x, s), r, w, pad=4)
    if shift or ramp:
        # x carries its ramp in its own frame; the shifted copy carries the same ramp up to
        # a constant phase, so the coarse ramp also seeds the model applied before the shift.
        s, a = _refine(x, r, w, s, a, shift, ramp)
    y, c = _model(x, w, r, s, a)
    if real:
        y, c = y.real, c.real
    amp = abs(c) if scale else 1.0
    ph = float(np.angle(c)) if phase else 0.0
    if real:
        out = y * (amp * np.sign(c) if phase else amp)
    else:
        out = y * (amp * np.exp(1j * ph))
    err = np.sqrt(np.sum(w * np.abs(out - r) ** 2) / np.sum(w * np.abs(r) ** 2))
    # a real integer image is scaled and shifted: floats (an integer cast truncated it)
    dtype = np.result_type(x0.dtype, np.float32) if real else np.result_type(x0.dtype,
                                                                              np.complex64)
    info = {"shift_px": s, "ramp": a, "scale": float(amp), "phase": ph, "error": float(err)}
    return out.astype(dtype), info
