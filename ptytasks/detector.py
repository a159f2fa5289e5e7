"""Detector artefacts found in the frames themselves: split wide pixels and hot pixels.

Hybrid pixel detectors (Pilatus, Eiger, Medipix) have wider pixels along their chip
boundaries. Converted to a regular grid, a double-wide pixel becomes two virtual pixels that
share its counts, so the two lines read the same value to within one count in every frame
(``floor(N / 2)`` and ``ceil(N / 2)``); no forward model that predicts each virtual pixel
on its own can fit them. A hot pixel reads a near-constant, high count in every frame, far
above its neighbours, whatever the specimen does. Both are masked (left out of the data
term of every engine, :func:`ptytasks.engines.pie_state.detector_mask_of`), as a file's own
bad-pixel mask is.

The tests are strict enough that measured specimen signal cannot pass them by chance: a
split line pair needs integer frames whose two lines differ by at most one count in every
frame at every pixel while carrying on average at least one count per pixel (independent
Poisson pixels with one count on average differ by more than one count in ~26 % of
readings); a hot pixel must exceed ``hot_ratio`` times the median of its eight neighbours'
mean counts, carry at least ``hot_min_counts`` per frame, and vary no more than Poisson
noise allows (``var / mean <= hot_max_dispersion``: specimen signal that bright is
modulated by the scan). Found on the measured Siemens star (rows and columns 60-63 / 37-40
of the centred frame, and one pixel beside the centre reading 293 +- 18 counts where its
neighbours read 12-54): ``docs/rnf.md``.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 64  # frames per pass: bounded memory for lazily read frames


class ArtefactScan:
    """Running per-pixel moments of frames seen block by block (one pass, as the frames
    are written), then :meth:`result`: the mask and report of :func:`artefact_mask`."""

    def __init__(self):
        self.n, self.s, self.s2, self.dmax, self.integer = 0, None, None, [None, None], True

    def add(self, block) -> None:
        """Fold in frames ``(k, ny, nx)``."""
        f = np.asarray(block, dtype=np.float64)
        if not len(f):
            return
        self.n += len(f)
        self.integer = self.integer and bool(np.all(f == np.round(f)))
        self.s = f.sum(0) if self.s is None else self.s + f.sum(0)
        self.s2 = (f**2).sum(0) if self.s2 is None else self.s2 + (f**2).sum(0)
        for ax in (0, 1):
            d = np.abs(np.diff(f, axis=ax + 1)).max(0)
            self.dmax[ax] = d if self.dmax[ax] is None else np.maximum(self.dmax[ax], d)

    def result(self) -> tuple[np.ndarray | None, dict]:
        """``(mask, report)`` as :func:`artefact_mask` returns them."""
        if not self.n:
            return None, {"masked": 0}
        mean = self.s / self.n
        var = np.maximum(self.s2 / self.n - mean**2, 0.0)
        rows, cols = split_pixel_lines(mean, self.dmax) if self.integer else ([], [])
        hot = hot_pixels(mean, var)
        bad = hot.copy()
        for a, b in rows:
            bad[a : b + 1] = True
        for a, b in cols:
            bad[:, a : b + 1] = True
        report = {"split_rows": [list(p) for p in rows], "split_cols": [list(p) for p in cols],
                  "hot_pixels": np.argwhere(hot).tolist(), "integer": self.integer,
                  "masked": int(bad.sum())}  # fmt: skip
        return (None if not bad.any() else ~bad), report


def split_pixel_lines(mean: np.ndarray, dmax: list[np.ndarray]) -> tuple[list, list]:
    """Adjacent row pairs and column pairs ``(i, i + 1)`` that read as one split pixel."""
    out = []
    for ax in (0, 1):
        m = mean if ax == 0 else mean.T
        d = dmax[ax] if ax == 0 else dmax[ax].T
        pairs = [(i, i + 1) for i in range(d.shape[0])
                 if d[i].max() <= 1 and m[i : i + 2].mean() >= 1.0]  # fmt: skip
        out.append(pairs)
    return out[0], out[1]


def hot_pixels(mean: np.ndarray, var: np.ndarray, *, hot_ratio: float = 5.0,
               hot_min_counts: float = 10.0, hot_max_dispersion: float = 2.0) -> np.ndarray:
    """Bool map of pixels far brighter than their neighbours and unmodulated by the scan.

    The neighbours are the pixels that exist: 8 inside the frame, 5 on an edge, 3 in a
    corner. An edge-replicating pad would count a corner pixel 3 times among its own 8
    neighbours and its edge neighbours twice, so two hot pixels side by side in a corner
    (or three in a row on an edge) would set their own median and go unmasked.
    """
    p = np.pad(np.asarray(mean, np.float64), 1, mode="constant", constant_values=np.nan)
    h, w = mean.shape
    nb = np.stack([p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])  # fmt: skip
    med = np.nanmedian(nb, 0)
    disp = var / np.maximum(mean, 1e-12)
    return (mean >= hot_min_counts) & (mean > hot_ratio * med) & (disp <= hot_max_dispersion)


def artefact_mask(frames) -> tuple[np.ndarray | None, dict]:
    """Usable-pixel mask (True = use) with split-pixel lines and hot pixels left out.

    Parameters
    ----------
    frames : array-like ``(n, ny, nx)``
        Measured intensities, counts (read in chunks of frames; lazily read frames stay on
        disk).

    Returns
    -------
    mask : bool ``(ny, nx)`` or None
        None where nothing was found.
    report : dict
        ``split_rows`` / ``split_cols`` (line pairs), ``hot_pixels`` (``[y, x]`` list),
        ``integer`` (whether the split-pixel test applied), ``masked`` (pixel count).
    """
    scan = ArtefactScan()
    for a in range(0, len(frames), _CHUNK):
        scan.add(frames[a : a + _CHUNK])
    return scan.result()


__all__ = ["ArtefactScan", "artefact_mask", "hot_pixels", "split_pixel_lines"]
