"""Fourier ring correlation (FRC), resolution thresholds and half-data splits.

``FRC(k) = Re sum_ring A conj(B) / sqrt(sum_ring |A|^2 sum_ring |B|^2)`` with ``A, B`` the
2-D FFTs of the two (optionally apodised) images.

Ring binning: with ``n = min(ny, nx)`` and ``q = sqrt(fy^2 + fx^2)`` the radial frequency
in cycles per pixel (``numpy.fft.fftfreq`` grids, so non-square images keep physical rings),
ring ``k`` holds the pixels with ``k - 1/2 <= q n < k + 1/2``, at frequency ``k / n``, for
``k = 0 .. n // 2``; the corners beyond Nyquist (0.5 cycles/pixel) are left out.

Resolution is ``1 / f`` (a full period) at the first crossing ``f`` of the curve below a
threshold after the low-frequency region, found by linear interpolation between rings (the
rule is stated once, in :func:`resolution`). Half-bit and 1/7 are the criteria for two
*independent half-data* reconstructions; against a noise-free ground truth the equivalent
1/7 criterion is ~0.5 (Rosenthal & Henderson 2003).

Effective pixel counts. A window or mask ``w`` (the product of both) leaves fewer
independent Fourier samples per ring than the ring has pixels: the spectrum of the windowed
image is smoothed by ``|W|^2``, which correlates neighbouring samples over about
``sqrt(N / A_eff)`` pixels, with ``N`` the image's pixel count and
``A_eff = (sum w^2)^2 / sum w^4`` the window's effective area in pixels (a binary mask: its
pixel count). A ring is one pixel wide, so only the correlation *along* it removes samples:
``n_eff = n_ring * sqrt(A_eff / N)`` (a mask over a quarter of the image, half as many per
ring; the FRC over the masked region alone, without zero padding, has the same count per
ring of the same frequency). The half-bit and one-bit curves (van Heel & Schatz 2005, where
``n`` is the number of independent pixels per ring) take ``n_eff``.
``tests/metrics/test_frc.py`` checks the factor against the measured spread of the FRC of
independent noise under masks and windows (counting every pixel, or the area ratio without
the square root, is off by 2x-4x there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.spatial import cKDTree

from ptytasks.metrics.align import to_numpy


def halfbit_threshold(n) -> np.ndarray:
    """Half-bit curve (van Heel & Schatz 2005, J. Struct. Biol. 151:250), ``n`` pixels/ring.

    ``T = (0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))``; ``n`` is the full
    pixel count of the ring (both Hermitian halves for real images, as in the paper).
    """
    s = np.sqrt(np.maximum(np.asarray(n, float), 1.0))
    return (0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s)


def onebit_threshold(n) -> np.ndarray:
    """One-bit curve (van Heel & Schatz 2005): ``(0.5 + 2.4142/sqrt n) / (1.5 + 1.4142/sqrt n)``."""
    s = np.sqrt(np.maximum(np.asarray(n, float), 1.0))
    return (0.5 + 2.4142 / s) / (1.5 + 1.4142 / s)


class Resolution(NamedTuple):
    """Resolution from an FRC crossing.

    freq : float
        Crossing frequency, cycles per pixel (Nyquist 0.5, or the band limit
        ``FRCResult.max_freq``, if the curve never crosses; 0 when it is below the
        threshold from the first ring searched: nothing resolved).
    length_m : float or None
        ``pixel_size / freq`` in metres (a full period; ``inf`` at ``freq`` 0), when a
        pixel size was given.
    crossed : bool
        False when the curve stays above the threshold up to Nyquist or the band limit
        (``freq`` is then a bound: the resolution is at least that good).
    """

    freq: float
    length_m: float | None
    crossed: bool


@dataclass
class FRCResult:
    """An FRC curve.

    Attributes
    ----------
    freq : (K,) float
        Ring frequencies, cycles per pixel, ``0 .. 0.5``.
    frc : (K,) float
        Correlation per ring (NaN where a ring has no power in one image).
    n_per_ring : (K,) int
        Pixels per ring.
    halfbit : (K,) float
        Half-bit threshold for the effective counts ``n_effective``.
    n_effective : (K,) float
        Independent samples per ring under the window and mask (module docstring);
        ``n_per_ring`` when no window was applied.
    min_freq : float
        Upper edge of the low-frequency region, cycles per pixel: ``2 / sqrt(A_eff)``,
        twice the main-lobe half-width of the window's spectrum (module docstring); rings
        below it hold the window's own leakage of the mean and are not searched.
    max_freq : float
        Band limit, cycles per pixel (0.5: Nyquist): the highest frequency the data
        measured in every direction (e.g. Fourier ptychography's synthetic aperture, when
        the object grid is finer than it). Rings above it are not searched: whatever
        agrees there was not measured.
    """

    freq: np.ndarray
    frc: np.ndarray
    n_per_ring: np.ndarray
    halfbit: np.ndarray
    n_effective: np.ndarray | None = None
    min_freq: float = 0.0
    max_freq: float = 0.5

    def __post_init__(self):
        if self.n_effective is None:
            self.n_effective = np.asarray(self.n_per_ring, float)

    def threshold(self, kind: str | float = "halfbit") -> np.ndarray:
        """Threshold curve: ``"halfbit"``, ``"onebit"``, ``"1/7"`` or a fixed float."""
        if kind == "halfbit":
            return self.halfbit
        if kind == "onebit":
            return onebit_threshold(self.n_effective)
        value = 1 / 7 if kind == "1/7" else float(kind)
        return np.full(self.freq.shape, value)

    def resolution(
        self, threshold: str | float = "halfbit", pixel_size: float | None = None
    ) -> Resolution:
        """See :func:`resolution`."""
        return resolution(self, threshold, pixel_size)


def resolution(
    result: FRCResult,
    threshold: str | float = "halfbit",
    pixel_size: float | None = None,
    *,
    start: int | None = None,
) -> Resolution:
    """Resolution from an FRC curve: the standard first crossing.

    The rule: search the rings from the first one at or above ``result.min_freq`` (the
    low-frequency region, where the window's spectrum leaks the mean, is skipped; ring 0
    always is); the resolution is the first ring where the curve falls below the threshold,
    linearly interpolated with the ring before it. Rings without power (NaN) count as
    below. If the curve never falls below up to Nyquist, or up to ``result.max_freq``
    (the band limit, where the data measured less than Nyquist), ``freq`` is that limit
    (0.5 for Nyquist, also for an odd image side, whose last ring is centred just below
    it) and ``crossed`` False (a bound). Later recoveries above the threshold do not count
    ("last crossing" is no resolution).

    Parameters
    ----------
    result : FRCResult
    threshold : "halfbit", "onebit", "1/7" or float
        Use ``0.5`` when comparing one reconstruction with a noise-free ground truth.
    pixel_size : float, optional
        Metres per pixel; gives ``length_m = pixel_size / freq``.
    start : int, optional
        First ring searched, overriding the low-frequency rule (at least 1).
    """
    d = result.frc - result.threshold(threshold)
    f = result.freq
    if start is None:
        start = int(np.searchsorted(f, result.min_freq - 1e-12))
    limit = min(float(f[-1]), float(result.max_freq))
    # Not crossed: the bound is Nyquist (or the band limit). The last ring reaches Nyquist
    # for an odd side too (its centre is (n // 2) / n < 0.5, its outer edge 0.5), so
    # reporting its centre would rank an odd box one ring below an even one.
    freq, crossed = min(0.5, float(result.max_freq)), False
    # NaN rings (no power) count as "below": nothing is resolved there.
    below = ~(d >= 0)
    for k in range(max(start, 1), len(f)):
        if f[k] > limit + 1e-12:
            break
        if below[k]:
            crossed = True
            if np.isfinite(d[k]) and np.isfinite(d[k - 1]) and d[k - 1] > 0:
                freq = float(f[k - 1] + (f[k] - f[k - 1]) * d[k - 1] / (d[k - 1] - d[k]))
            else:  # below from the first ring searched: nothing above the skipped region
                freq = float(f[k - 1]) if k - 1 >= start else 0.0
            break
    length = None if pixel_size is None else (float(pixel_size) / freq if freq > 0 else math.inf)
    return Resolution(freq, length, crossed)


def tukey_window(shape: tuple[int, int], alpha: float = 0.25) -> np.ndarray:
    """Separable 2-D Tukey window: flat centre, cosine tapers over ``alpha/2`` of each side."""
    from scipy.signal.windows import tukey

    return np.outer(tukey(shape[0], alpha), tukey(shape[1], alpha))


def hann_window(shape: tuple[int, int]) -> np.ndarray:
    """Separable 2-D Hann window (a Tukey window with ``alpha = 1``)."""
    return tukey_window(shape, 1.0)


def taper_mask(mask, width: float = 8.0) -> np.ndarray:
    """Soft version of a boolean mask of any shape: ``sin^2`` taper over ``width`` pixels.

    Weight ``sin^2(pi/2 * min(d / width, 1))`` with ``d`` the distance (pixels) to the
    nearest pixel outside the mask (the array border counts as outside), so it falls to zero
    at the mask edge and the hard outline adds no correlated high-frequency power.
    """
    m = to_numpy(mask).astype(bool)
    # Pad with "outside" so the taper also runs down at the array border.
    d = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    return np.sin(0.5 * np.pi * np.minimum(d / max(width, 1e-9), 1.0)) ** 2


def _window(window, shape, alpha):
    if window is None:
        return None
    if isinstance(window, str):
        if window == "tukey":
            return tukey_window(shape, alpha)
        if window == "hann":
            return hann_window(shape)
        raise ValueError(f"unknown window {window!r} (tukey, hann, None or an array)")
    w = to_numpy(window).astype(float)
    if w.shape != tuple(shape):
        raise ValueError(f"window shape {w.shape} does not match image shape {shape}")
    return w


def ring_indices(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Ring index per FFT pixel (``-1`` beyond Nyquist) and ring frequencies (cycles/pixel)."""
    n = min(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    k = np.floor(np.sqrt(fy**2 + fx**2) * n + 0.5).astype(np.int64)
    kmax = n // 2
    k[k > kmax] = -1
    return k, np.arange(kmax + 1) / n


def frc(a, b, *, window="tukey", alpha: float = 0.25, mask=None,
        band_limit: float | None = None) -> FRCResult:
    """Fourier ring correlation of two images (real or complex).

    Parameters
    ----------
    a, b : (ny, nx) arrays or tensors
        Registered images (align them first; a global phase lowers the real part of the
        correlation for complex images).
    window : "tukey", "hann", None or (ny, nx) array
        Apodisation applied to both images to suppress the edge discontinuities of
        non-periodic images (they put a correlated cross into both spectra).
    alpha : float
        Tukey taper fraction.
    mask : (ny, nx) bool or float, optional
        Region to compare; multiplied into the window (pass :func:`taper_mask` of a boolean
        region for a soft edge).
    band_limit : float, optional
        Cycles per pixel: the highest frequency the data measured in every direction
        (``FRCResult.max_freq``, capped at Nyquist); the crossing is searched only below it.

    Returns
    -------
    FRCResult
    """
    x = to_numpy(a)
    y = to_numpy(b)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"need two 2-D images of one shape, got {x.shape} and {y.shape}")
    w = _window(window, x.shape, alpha)
    if mask is not None:
        m = to_numpy(mask).astype(float)
        if m.shape != x.shape:
            raise ValueError(f"mask shape {m.shape} does not match image shape {x.shape}")
        w = m if w is None else w * m
    used = np.ones(x.shape, bool) if w is None else w > 0
    if not (np.isfinite(x[used]).all() and np.isfinite(y[used]).all()):
        raise ValueError("FRC: an image holds NaN or infinite values inside the window/mask")
    area = float(x.size)
    if w is not None:  # pixels of weight 0 take no part, whatever they hold
        x, y = np.where(used, x * w, 0), np.where(used, y * w, 0)
        w2 = float(np.sum(w**2))
        if w2 <= 0:
            raise ValueError("the window/mask is zero everywhere: nothing to correlate")
        area = w2**2 / float(np.sum(w**4))
    fa = np.fft.fft2(x.astype(np.complex128))
    fb = np.fft.fft2(y.astype(np.complex128))
    k, freq = ring_indices(x.shape)
    sel = k >= 0
    kk = k[sel]
    nring = len(freq)
    num = np.bincount(kk, (fa * np.conj(fb)).real[sel], nring)
    pa = np.bincount(kk, np.abs(fa[sel]) ** 2, nring)
    pb = np.bincount(kk, np.abs(fb[sel]) ** 2, nring)
    npr = np.bincount(kk, minlength=nring)
    den = np.sqrt(pa * pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(den > 0, num / den, np.nan)
    n_eff = npr * np.sqrt(area / x.size)
    min_freq = 2.0 / np.sqrt(area)
    max_freq = 0.5 if band_limit is None else min(0.5, float(band_limit))
    return FRCResult(freq, curve, npr, halfbit_threshold(n_eff), n_eff, min_freq, max_freq)


def half_split_indices(scan, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Split a scan into two interleaved halves for half-data FRC.

    Parameters
    ----------
    scan : int or (n, 2) array
        Number of frames, or positions ``(y, x)`` (any unit).
    method : "auto", "alternate", "checkerboard" or "lattice"
        ``alternate``: even / odd frames in scan order. ``checkerboard``: positions are
        snapped to their raster rows and columns (gaps over half the nearest-neighbour step
        start a new line) and split by ``(row + col) % 2``, so each half still covers the
        field evenly. ``auto``: checkerboard when the positions form a full raster
        (rows x columns == frames, one frame per node), else alternate. ``lattice``:
        checkerboard of positions on *some* nodes of a rectangular lattice with rows and
        columns along the axes (an LED board clipped to a disc): every position must lie
        within 0.2 steps of its snapped node under a least-squares fit of
        ``origin + row * step_y + col * step_x`` (a rotated board or a missing row fails).

    Returns
    -------
    (idx_a, idx_b) : sorted int64 arrays of frame indices.
    """
    if np.ndim(scan) == 0:
        if method == "checkerboard":
            raise ValueError("checkerboard needs positions, not a frame count")
        n = int(scan)
        idx = np.arange(n)
        return idx[0::2], idx[1::2]
    pos = np.asarray(to_numpy(scan), float)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (n, 2), got {pos.shape}")
    n = len(pos)
    grid = None
    if method in ("auto", "checkerboard", "lattice"):
        grid = _raster_nodes(pos, complete=method != "lattice")
    if grid is None:
        if method in ("checkerboard", "lattice"):
            kind = "lattice" if method == "lattice" else "raster"
            raise ValueError(f"positions do not form a {kind}; use method='alternate'")
        return half_split_indices(n)
    odd = (grid[:, 0] + grid[:, 1]) % 2 == 1
    idx = np.arange(n)
    return idx[~odd], idx[odd]


def _raster_nodes(pos: np.ndarray, complete: bool = True) -> np.ndarray | None:
    """``(row, col)`` per position if they form a complete raster (``complete``), or lie on
    distinct nodes of a rectangular lattice (not ``complete``), else None."""
    n = len(pos)
    if n < 4:
        return None
    nn, _ = cKDTree(pos).query(pos, k=2)
    tol = 0.5 * np.median(nn[:, 1])
    nodes = np.empty((n, 2), np.int64)
    for ax in (0, 1):
        order = np.argsort(pos[:, ax])
        line = np.concatenate([[0], np.cumsum(np.diff(pos[order, ax]) > tol)])
        nodes[order, ax] = line
    nrow, ncol = nodes.max(0) + 1
    if len(np.unique(nodes[:, 0] * ncol + nodes[:, 1])) != n:
        return None
    if complete:
        return nodes if nrow * ncol == n else None
    # snapped lines are only lattice lines if the nodes reproduce the positions
    design = np.column_stack([np.ones(n), nodes])
    fit, *_ = np.linalg.lstsq(design, pos, rcond=None)
    miss = np.linalg.norm(design @ fit - pos, axis=1)
    step = np.linalg.norm(fit[1:], axis=1).min()
    return nodes if miss.max() <= 0.2 * step else None
