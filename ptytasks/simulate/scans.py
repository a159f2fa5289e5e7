"""Scan patterns: raster, jittered raster, Fermat spiral and random (Poisson-disc) scans.

Patterns are generated as probe-*centre* offsets in object pixels (origin arbitrary), then
:func:`place` turns them into window **corners** ``(y, x)`` (``docs/conventions.md``) with a
free margin, and :func:`object_shape_for` gives the object array that holds them.

The step between neighbouring positions is set from a linear overlap
``overlap = 1 - step / diameter`` (:func:`step_from_overlap`), ``diameter`` being the probe
diameter in pixels. For the irregular patterns "step" means the mean nearest-neighbour
distance (:func:`nearest_neighbour_distances`), which each generator is calibrated to hit.
"""

from __future__ import annotations

import math

import numpy as np

SCANS: tuple[str, ...] = ("raster", "jittered", "fermat", "random")
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
# Fermat spiral r_k = c sqrt(k): one point per pi c^2 of area. Its mean nearest-neighbour
# distance is ~1.68 c (measured over 50..2000 points); c = step / 1.68 hits the step.
_FERMAT_NN = 1.68
# Bridson Poisson-disc sampling with exclusion radius r gives a mean nearest-neighbour
# distance ~1.09 r in the interior; r = step / 1.09 hits the step.
_POISSON_NN = 1.09


def step_from_overlap(diameter: float, overlap: float) -> float:
    """Step (pixels) giving a linear ``overlap = 1 - step / diameter`` (``0 <= overlap < 1``)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1); got {overlap}")
    if diameter <= 0:
        raise ValueError(f"probe diameter must be positive pixels; got {diameter}")
    return float(diameter) * (1.0 - float(overlap))


def overlap_from_step(diameter: float, step: float) -> float:
    """Linear overlap ``1 - step / diameter`` of a scan with ``step`` pixels."""
    return 1.0 - float(step) / float(diameter)


def nearest_neighbour_distances(positions: np.ndarray) -> np.ndarray:
    """Distance (pixels) from each position to its nearest other position, ``(n,)``."""
    from scipy.spatial import cKDTree

    p = np.asarray(positions, dtype=np.float64)
    if len(p) < 2:
        return np.full(len(p), np.inf)
    d, _ = cKDTree(p).query(p, k=2)
    return d[:, 1]


def scan_overlap(positions: np.ndarray, diameter: float) -> float:
    """Effective linear overlap of a scan: ``1 - mean_nn_distance / diameter``."""
    return overlap_from_step(diameter, float(nearest_neighbour_distances(positions).mean()))


def raster(
    step: float,
    *,
    n_positions: int | None = None,
    field: tuple[float, float] | None = None,
    jitter: float = 0.0,
    seed: int | None = 0,
) -> np.ndarray:
    """Rectangular grid of probe centres, row by row, optionally jittered.

    Parameters
    ----------
    step : float
        Grid pitch, pixels.
    n_positions : int, optional
        Target count: the grid is ``ny x nx`` with ``ny = round(sqrt(n))`` and
        ``nx = round(n / ny)`` (so 100 -> 10 x 10; the count may differ slightly from ``n``).
    field : (float, float), optional
        Extent ``(fy, fx)`` in pixels that the centres span (used if ``n_positions`` is
        None): ``floor(f / step) + 1`` points per axis.
    jitter : float
        Uniform random displacement per axis in ``[-jitter, jitter] * step`` (breaks the
        raster's translational symmetry, which otherwise gives periodic artefacts).
    seed : int or None
        Seed for the jitter.

    Returns
    -------
    float64 ``(n, 2)`` centres ``(y, x)`` from ``(0, 0)``, pixels.
    """
    if n_positions is not None:
        if n_positions < 1:
            raise ValueError(f"n_positions must be >= 1; got {n_positions}")
        ny = max(1, round(math.sqrt(n_positions)))
        nx = max(1, round(n_positions / ny))
    elif field is not None:
        ny, nx = (int(math.floor(f / step + 1e-9)) + 1 for f in field)
    else:
        raise ValueError("raster needs n_positions or field")
    yy, xx = np.meshgrid(np.arange(ny) * step, np.arange(nx) * step, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)
    if jitter:
        rng = np.random.default_rng(seed)
        pos += rng.uniform(-jitter, jitter, size=pos.shape) * step
    return pos


def fermat_spiral(
    step: float, *, n_positions: int | None = None, field: tuple[float, float] | None = None
) -> np.ndarray:
    """Fermat (sunflower) spiral ``r_k = c sqrt(k)``, ``theta_k = k * golden angle``.

    Uniform density without a lattice, so no raster pathology; ``c`` is chosen so the mean
    nearest-neighbour distance equals ``step``.

    Parameters
    ----------
    step : float
        Mean nearest-neighbour distance, pixels.
    n_positions : int, optional
        Exactly this many points (a disc of radius ``c sqrt(n)``).
    field : (float, float), optional
        Keep the spiral points inside this ``(fy, fx)`` rectangle (if ``n_positions`` is None).

    Returns
    -------
    float64 ``(n, 2)`` centres ``(y, x)``, pixels, centred on ``(0, 0)``.
    """
    c = step / _FERMAT_NN
    if n_positions is not None:
        if n_positions < 1:
            raise ValueError(f"n_positions must be >= 1; got {n_positions}")
        k = np.arange(n_positions)
    elif field is not None:
        half = np.asarray(field, dtype=np.float64) / 2
        k_max = int(math.ceil((np.hypot(*half) / c) ** 2)) + 1
        k = np.arange(k_max)
    else:
        raise ValueError("fermat_spiral needs n_positions or field")
    r = c * np.sqrt(k + 0.5)  # +0.5 keeps the first point off the exact centre singularity
    t = k * _GOLDEN_ANGLE
    pos = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
    if n_positions is None:
        inside = (np.abs(pos[:, 0]) <= half[0]) & (np.abs(pos[:, 1]) <= half[1])
        pos = pos[inside]
    return pos


def poisson_disc(
    step: float,
    *,
    n_positions: int | None = None,
    field: tuple[float, float] | None = None,
    seed: int | None = 0,
    attempts: int = 30,
) -> np.ndarray:
    """Random scan with a minimum spacing (Bridson's Poisson-disc sampling).

    Parameters
    ----------
    step : float
        Target mean nearest-neighbour distance, pixels (the exclusion radius is
        ``step / 1.09``).
    n_positions : int, optional
        Exactly this many points: a square field large enough is filled and the ``n``
        points nearest its centre are kept.
    field : (float, float), optional
        Rectangle ``(fy, fx)`` to fill (if ``n_positions`` is None).
    seed : int or None
    attempts : int
        Candidates tried around each active point (Bridson's ``k``).

    Returns
    -------
    float64 ``(n, 2)`` centres ``(y, x)``, pixels.
    """
    rmin = step / _POISSON_NN
    if n_positions is not None:
        if n_positions < 1:
            raise ValueError(f"n_positions must be >= 1; got {n_positions}")
        # Packing density of Bridson samples is ~0.7 / r^2; 1.6x area margin for the crop.
        side = math.sqrt(1.6 * n_positions * rmin * rmin / 0.7) + 2 * rmin
        fy = fx = side
    elif field is not None:
        fy, fx = (float(f) for f in field)
    else:
        raise ValueError("poisson_disc needs n_positions or field")
    rng = np.random.default_rng(seed)
    cell = rmin / math.sqrt(2)
    gy, gx = int(fy / cell) + 1, int(fx / cell) + 1
    grid = -np.ones((gy, gx), dtype=np.int64)  # index of the sample in each cell, -1 empty
    pts: list[tuple[float, float]] = []

    def add(p):
        grid[int(p[0] / cell), int(p[1] / cell)] = len(pts)
        pts.append(p)

    def free(p) -> bool:
        iy, ix = int(p[0] / cell), int(p[1] / cell)
        for j in range(max(0, iy - 2), min(gy, iy + 3)):
            for i in range(max(0, ix - 2), min(gx, ix + 3)):
                q = grid[j, i]
                if q >= 0 and (pts[q][0] - p[0]) ** 2 + (pts[q][1] - p[1]) ** 2 < rmin * rmin:
                    return False
        return True

    add((fy / 2, fx / 2))
    active = [0]
    while active:
        a = active[rng.integers(len(active))]
        base = pts[a]
        for _ in range(attempts):
            rad = rmin * (1 + rng.random())
            ang = 2 * math.pi * rng.random()
            p = (base[0] + rad * math.sin(ang), base[1] + rad * math.cos(ang))
            if 0 <= p[0] < fy and 0 <= p[1] < fx and free(p):
                active.append(len(pts))
                add(p)
                break
        else:
            active.remove(a)
    pos = np.asarray(pts, dtype=np.float64)
    if n_positions is not None:
        if len(pos) < n_positions:  # pragma: no cover - the area margin makes this rare
            raise RuntimeError(f"Poisson-disc fill gave {len(pos)} < {n_positions} points")
        d = np.hypot(pos[:, 0] - fy / 2, pos[:, 1] - fx / 2)
        pos = pos[np.sort(np.argsort(d, kind="stable")[:n_positions])]
    return pos


def scan_centres(
    kind: str,
    diameter: float,
    overlap: float,
    *,
    n_positions: int | None = None,
    field: tuple[float, float] | None = None,
    seed: int | None = 0,
    jitter: float = 0.1,
) -> np.ndarray:
    """Probe centres for scan ``kind`` at a linear ``overlap`` of a ``diameter``-pixel probe.

    Parameters
    ----------
    kind : {"raster", "jittered", "fermat", "random"}
    diameter : float
        Probe diameter, pixels.
    overlap : float
        Linear overlap ``1 - step / diameter`` in ``[0, 1)``.
    n_positions, field
        Count target or covered extent, as in :func:`raster`.
    seed : int or None
        For ``jittered`` and ``random``.
    jitter : float
        ``jittered`` only: maximum displacement per axis as a fraction of the step.

    Returns
    -------
    float64 ``(n, 2)`` centres ``(y, x)``, pixels (origin arbitrary: use :func:`place`).
    """
    step = step_from_overlap(diameter, overlap)
    if kind == "raster":
        return raster(step, n_positions=n_positions, field=field)
    if kind == "jittered":
        return raster(step, n_positions=n_positions, field=field, jitter=jitter, seed=seed)
    if kind == "fermat":
        return fermat_spiral(step, n_positions=n_positions, field=field)
    if kind == "random":
        return poisson_disc(step, n_positions=n_positions, field=field, seed=seed)
    raise ValueError(f"unknown scan kind {kind!r}; choose one of {', '.join(SCANS)}")


def place(
    centres: np.ndarray, window: tuple[int, int], margin: float = 8.0, *, origin=None
) -> np.ndarray:
    """Window corners ``(y, x)`` for probe ``centres``, shifted so the smallest is ``margin``.

    The window's centre is pixel ``(wy // 2, wx // 2)`` (the centred-FFT origin, where the
    probes of :mod:`ptytasks.physics.probes` are centred), so ``corner = centre - w // 2``.

    Parameters
    ----------
    centres : ``(n, 2)`` pixels
    window : (wy, wx)
        Probe window shape.
    margin : float
        Free object pixels before the first window on each axis.
    origin : ``(2,)``, optional
        Use this as the minimum corner before adding the margin (to place several related
        position sets, e.g. true and erroneous ones, with one common shift).

    Returns
    -------
    float64 ``(n, 2)`` corners, object pixels.
    """
    c = np.asarray(centres, dtype=np.float64) - np.asarray(window, dtype=np.float64) // 2
    lo = c.min(0) if origin is None else np.asarray(origin, dtype=np.float64)
    return c - lo + float(margin)


def object_shape_for(
    corners: np.ndarray, window: tuple[int, int], margin: float = 8.0
) -> tuple[int, int]:
    """Smallest object shape holding every ``window`` at ``corners`` plus ``margin`` pixels.

    Corners below ``margin`` are not moved: use :func:`place` first.
    """
    p = np.asarray(corners, dtype=np.float64)
    hi = p.max(0) + np.asarray(window, dtype=np.float64) + float(margin)
    return int(math.ceil(hi[0] - 1e-9)), int(math.ceil(hi[1] - 1e-9))


def scan_positions(
    kind: str,
    diameter: float,
    overlap: float,
    window: tuple[int, int],
    *,
    n_positions: int | None = None,
    field: tuple[float, float] | None = None,
    margin: float = 8.0,
    seed: int | None = 0,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Corners and the object shape for a scan in one call.

    Returns
    -------
    corners : float64 ``(n, 2)``
        Window corners ``(y, x)``, object pixels, the smallest at ``margin``.
    object_shape : (int, int)
    """
    c = scan_centres(kind, diameter, overlap, n_positions=n_positions, field=field, seed=seed)
    corners = place(c, window, margin)
    return corners, object_shape_for(corners, window, margin)
