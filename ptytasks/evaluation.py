"""Quality of a stitched reconstruction: against ground truth, or between two
reconstructions from interleaved halves of the data; preview images.

Memory: metrics need the whole image at once (alignment, FRC), so a mosaic with more than
:data:`MAX_EVAL_PIXELS` pixels is evaluated on the finest pyramid level within that bound
(:func:`evaluation_level`); the truth is reduced the same way (:func:`downsample_weighted`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ptytasks.metrics.errors import TRUTH_FRC_THRESHOLD, quality_report
from ptytasks.metrics.frc import frc

#: Version of the metrics' definitions, part of every evaluation's fingerprint so a store
#: evaluated under an older definition is evaluated again, not served its old values. Bump
#: it when a metric's value can change for the same images. 2: an FRC curve that never
#: crosses its threshold reads Nyquist (0.5 c/px) for odd image sides too (83c98f2; before,
#: the last ring's centre, e.g. 0.4964 for 137 px). 3: the FRC against a reference removes
#: each image's windowed mean first, as the half-data FRC does (a uniform object scored
#: ~0.1 c/px against simulated truths through the window's shared spectrum), and the FRC
#: against the truth reads 0.5 (TRUTH_FRC_THRESHOLD), not the half-data threshold. 4: a curve
#: below its threshold from the first ring searched reads 0 (nothing resolved; it read the
#: edge of the skipped low-frequency region), a half that measured up to Nyquist no
#: longer lifts the other half's band limit, and a truth reduced for a coarse evaluation
#: level weighs odd edges as the pyramid does.
METRICS_VERSION = 4


#: Most pixels of the image the metrics are computed on (2048 x 2048). Alignment, FRC and
#: SSIM work in float64/complex128 with FFTs: ~530 bytes per pixel, a ~2.3 GB peak against
#: the truth at this bound (bench/bench_memory.py). Lower it for small machines.
MAX_EVAL_PIXELS = 2048 * 2048


def evaluation_level(shapes: list[tuple[int, int]], max_pixels: int | None = None) -> int:
    """The finest pyramid level with at most ``max_pixels`` pixels (else the coarsest).

    Parameters
    ----------
    shapes : the ``(y, x)`` shapes of levels 0, 1, ... (each 2x coarser)
    max_pixels : default :data:`MAX_EVAL_PIXELS`
    """
    limit = MAX_EVAL_PIXELS if max_pixels is None else int(max_pixels)
    for k, (h, w) in enumerate(shapes):
        if h * w <= limit:
            return k
    return max(0, len(shapes) - 1)


def halve_weighted(obj: np.ndarray, weight: np.ndarray, fill: complex = 0.0):
    """One pyramid round (``storage.mosaic``'s levels, :func:`downsample_weighted`):
    weighted 2x2 means of ``obj`` (complex128, ``fill`` where a block has no weight) and
    each block's weight, the mean weight of its real pixels -- an odd edge is padded with
    zero weight, and its block of one real pixel keeps that pixel's weight (``den / 4``
    halved it at every level, until the edge fell out of the trusted mask)."""
    o = np.asarray(obj, np.complex128)
    wt = np.asarray(weight, np.float64)
    pad = ((0, o.shape[0] % 2), (0, o.shape[1] % 2))
    real = np.pad(np.ones(o.shape), pad)
    o, wt = np.pad(o, pad), np.pad(wt, pad)
    blocks = lambda a: a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).sum((1, 3))  # noqa: E731
    num, den, cnt = blocks(o * wt), blocks(wt), blocks(real)
    return np.where(den > 0, num / np.where(den > 0, den, 1), fill), den / np.maximum(cnt, 1)


def downsample_weighted(obj: np.ndarray, weight: np.ndarray, factor: int) -> np.ndarray:
    """``obj`` (complex64) reduced by ``factor = 2**k`` as the mosaic pyramid reduces it
    (``storage.mosaic``), so a truth reduced this way lies on level ``k``'s grid: ``k``
    rounds of :func:`halve_weighted` (empty blocks 0).
    """
    f = int(factor)
    if f < 1 or f & (f - 1):
        raise ValueError(f"factor must be a power of 2; got {factor}")
    o, wt = np.asarray(obj, np.complex128), np.asarray(weight, np.float64)
    while f > 1:
        o, wt = halve_weighted(o, wt)
        f //= 2
    return o.astype(np.complex64)


def trusted_mask(weight: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Pixels whose illumination weight is at least ``fraction`` of the maximum."""
    return (
        weight >= fraction * float(weight.max())
        if weight.size and weight.max() > 0
        else (np.zeros(weight.shape, bool))
    )


def evaluate_mosaic(
    mosaic: np.ndarray,
    weight: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    halves: tuple[np.ndarray, np.ndarray] | None = None,
    pixel_size: float | None = None,
    threshold: str = "halfbit",
    band_limit: float | None = None,
) -> dict[str, float]:
    """Metrics as a flat dict of floats.

    Parameters
    ----------
    mosaic, weight : the stitched object and its blending weight (same shape)
    truth : ground-truth object on the same pixel grid (origin at the mosaic's [0, 0])
    halves : two half-data mosaics for the half-data FRC
    pixel_size : metres per pixel, for resolutions in metres
    threshold : the half-data FRC's threshold, ``"halfbit"`` or ``"1/7"``. The FRC against
        the (noise-free) truth crosses 0.5 whichever is chosen: that is 1/7's analogue for
        one noisy image against a perfect one (Rosenthal & Henderson 2003), as the grid
        reads it; the half-bit curve is built for two noisy halves and, read against a
        truth, credits resolution the data do not hold.
    band_limit : the data's band limit in cycles per pixel of this grid, or None
        (:func:`half_data_frc`); the FRC against the truth searches up to Nyquist
    """
    mask = trusted_mask(weight)
    out: dict[str, float] = {"trusted_pixels": float(mask.sum())}
    if truth is not None:
        h = min(truth.shape[0], mosaic.shape[0])
        w = min(truth.shape[1], mosaic.shape[1])
        rep = quality_report(mosaic[:h, :w], truth[:h, :w], mask[:h, :w],
                             pixel_size=pixel_size, threshold=TRUTH_FRC_THRESHOLD)  # fmt: skip
        out.update({f"truth_{k}": float(v) for k, v in rep.items()})
    if halves is not None:
        res = half_data_frc(*halves, mask, band_limit=band_limit).resolution(threshold,
                                                                             pixel_size)
        out["halfdata_frc_resolution"] = float(res.freq)
        out["halfdata_frc_resolution_m"] = float(res.length_m) if res.length_m else float("nan")
        # 0: no crossing up to Nyquist or the band limit (the resolution is then a bound)
        out["halfdata_frc_crossed"] = float(res.crossed)
        if band_limit is not None:
            out["halfdata_frc_band_limit"] = float(band_limit)
    return out


def half_data_frc(a: np.ndarray, b: np.ndarray, mask: np.ndarray, taper: float = 8.0,
                  band_limit: float | None = None):
    """FRC of two half-data reconstructions over ``mask`` (:class:`~ptytasks.metrics.frc.
    FRCResult`).

    ``b`` is aligned to ``a`` first (shift, phase ramp, complex scale: each half fixes its
    own global phase), both lose their mean over the region, and the FRC runs on the
    region's bounding box under a soft-edged mask: a hard outline, or the constant
    background seen through it, would correlate the halves at every frequency by itself.

    ``band_limit`` (cycles per pixel; :meth:`ptytasks.modalities.base.Modality.band_limit`):
    the highest frequency the data measured in every direction, where the object grid is
    finer than that (Fourier ptychography). Both images are low-passed to it first and
    the crossing is searched only below it (``FRCResult.max_freq``): a reconstruction's
    content beyond the measured band is a deterministic function of what it measured
    (interpolation, the network's harmonics, ``|.|``), so two halves agree there without
    any data saying so. Measured on the FPM blood smear (``docs/rnf.md``): RNF's halves
    correlate 0.6-0.8 beyond the synthetic aperture.
    """
    from ptytasks.metrics.align import align
    from ptytasks.metrics.frc import taper_mask

    if band_limit is not None and band_limit < 0.5:
        a, b = low_pass(a, band_limit), low_pass(b, band_limit)
    if not mask.any():
        raise ValueError("half-data FRC: the mask selects no pixels (nothing trusted)")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a, b, m = a[box].astype(np.complex128), b[box].astype(np.complex128), mask[box]
    b, _ = align(b, a, m)
    t = taper_mask(m, taper)
    a0 = a - (a * t).sum() / t.sum()
    b0 = b - (b * t).sum() / t.sum()
    return frc(a0, b0, window=None, mask=t, band_limit=band_limit)


def half_data_band_limit(data, halves=None) -> float | None:
    """The band limit (cycles per object pixel) both half-data halves of ``data``
    measured: the lower of the two halves' :meth:`~ptytasks.modalities.base.Modality.
    band_limit`. ``halves``: two frame-index arrays; default: split as the pipeline splits
    them (:meth:`~ptytasks.modalities.base.Modality.half_split`). None up to Nyquist."""
    from ptytasks.modalities import modality_of

    mod = modality_of(data)
    halves = mod.half_split(data) if halves is None else halves
    limits = [mod.band_limit(data.subset(h)) for h in halves]
    finite = [lim for lim in limits if lim is not None]  # None: up to Nyquist
    return min(finite) if finite else None


def low_pass(img: np.ndarray, cutoff: float) -> np.ndarray:
    """``img`` (complex128) with its spectrum zeroed beyond ``cutoff`` cycles per pixel
    (a disc; ``numpy.fft.fftfreq`` grid)."""
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    keep = fy**2 + fx**2 <= float(cutoff) ** 2
    return np.fft.ifft2(np.fft.fft2(np.asarray(img, np.complex128)) * keep)


def write_previews(
    mosaic: np.ndarray, weight: np.ndarray, out_dir: Path, *, stem: str
) -> list[Path]:
    """Amplitude and phase PNGs of the trusted region; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mask = trusted_mask(weight)
    paths = []
    for part, img, cmap in (("amplitude", np.abs(mosaic), "gray"),
                            ("phase", np.angle(mosaic), "twilight")):  # fmt: skip
        shown = np.where(mask, img, np.nan)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        vals = img[mask] if mask.any() else img.ravel()
        lo, hi = np.percentile(vals, [1, 99]) if vals.size else (0, 1)
        im = ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(f"{stem}: {part}")
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
        path = out_dir / f"{stem}_{part}.png"
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:  # a viewer sees the old preview or the whole new one, never half a file
            fig.savefig(tmp, bbox_inches="tight", format="png")
            os.replace(tmp, path)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
        paths.append(path)
    return paths
