"""Subsampling a scan to a sparse one; the kept indices are what every result refers to."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def keep_fraction(n_frames: int, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Keep ``round(fraction * n)`` frames chosen uniformly at random (sorted indices).

    Parameters
    ----------
    n_frames : int
    fraction : float in (0, 1]
    seed : int
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {fraction}")
    n_keep = max(1, int(round(fraction * n_frames)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_frames, size=n_keep, replace=False))


def _grid_index(values: np.ndarray, tol: float | None) -> np.ndarray:
    """Rank of each coordinate among the distinct values: the raster row (or column).

    Sorted coordinates jump by about one step between rows and by at most the jitter
    within a row; a gap above ``tol`` (default: half the largest gap) starts a new row.
    """
    order = np.argsort(values)
    gaps = np.diff(values[order])
    if tol is None:
        tol = 0.5 * gaps.max() if gaps.size else 0.0
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.concatenate([[0], np.cumsum(gaps > tol)])
    return ranks


def decimate_raster(positions: np.ndarray, stride: int, *, tol: float | None = None) -> np.ndarray:
    """Keep every ``stride``-th row and column of a raster scan (sorted indices).

    Rows and columns are found by grouping sorted coordinates separated by less than
    ``tol`` pixels (default: half the largest gap), so a jittered raster decimates as the
    nominal grid would.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    rows = _grid_index(positions[:, 0], tol)
    cols = _grid_index(positions[:, 1], tol)
    return np.flatnonzero((rows % stride == 0) & (cols % stride == 0))


def linear_overlap(step: float, probe_diameter: float) -> float:
    """Linear overlap ``1 - step / diameter`` of two neighbouring probe footprints."""
    return 1.0 - step / probe_diameter


def to_overlap(
    positions: np.ndarray, probe_diameter: float, target_overlap: float, *, seed: int = 0
) -> np.ndarray:
    """Greedily thin a scan until neighbours are at least ``d (1 - overlap)`` apart.

    Parameters
    ----------
    positions : (n, 2) pixels
    probe_diameter : float
        Probe footprint diameter in pixels.
    target_overlap : float in [0, 1)
        Linear overlap the kept scan should not exceed.

    Returns
    -------
    Sorted kept indices.
    """
    if not 0 <= target_overlap < 1:
        raise ValueError(f"target overlap must be in [0, 1), got {target_overlap}")
    min_step = probe_diameter * (1 - target_overlap)
    rng = np.random.default_rng(seed)
    tree = cKDTree(positions)
    removed = np.zeros(len(positions), dtype=bool)
    kept = []
    for i in rng.permutation(len(positions)):
        if removed[i]:
            continue
        kept.append(i)
        for j in tree.query_ball_point(positions[i], r=min_step * (1 - 1e-9)):
            removed[j] = True
    return np.sort(np.asarray(kept, dtype=np.int64))


def subsample(
    positions: np.ndarray,
    *,
    method: str = "all",
    fraction: float = 1.0,
    stride: int = 1,
    overlap: float | None = None,
    probe_diameter: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Dispatch: ``all``, ``fraction`` (random), ``stride`` (raster), ``overlap`` (target)."""
    n = len(positions)
    if method == "all":
        return np.arange(n)
    if method == "fraction":
        return keep_fraction(n, fraction, seed=seed)
    if method == "stride":
        return decimate_raster(positions, stride)
    if method == "overlap":
        if overlap is None or probe_diameter is None:
            raise ValueError("subsample method 'overlap' needs overlap and probe_diameter")
        return to_overlap(positions, probe_diameter, overlap, seed=seed)
    raise ValueError(f"unknown subsample method {method!r}; use all, fraction, stride or overlap")
