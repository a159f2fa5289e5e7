"""Stitching tile reconstructions into one mosaic.

Each tile's object is known only up to a complex scale (amplitude scale and global phase)
and a linear phase ramp. Pairwise estimates of these over the tile overlaps are reconciled
by least squares over the tile overlap graph (tile 0 fixed), then tiles are blended with
illumination-weighted feathering (:func:`feather`). :func:`stitch_region` computes any box
of the mosaic independently, so shard-aligned writers (``storage.mosaic``, one task per
shard) can each own a part of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ptytasks.tiling import Box, Tile

Loader = Callable[[str], tuple[np.ndarray, np.ndarray]]  # tile_id -> (object, weight)


@dataclass
class TileCorrection:
    """``O_corrected(r) = scale * exp(i (ramp . r)) * O(r)``, ``r`` in global pixels."""

    scale: complex = 1.0 + 0.0j
    ramp: tuple[float, float] = (0.0, 0.0)  # radians per pixel along (y, x)

    def to_dict(self) -> dict:
        return {"scale": [self.scale.real, self.scale.imag], "ramp": list(self.ramp)}


def _box_of(tile: Tile) -> Box:
    y0, x0 = tile.object_origin
    h, w = tile.object_shape
    return (y0, y0 + h, x0, x0 + w)


def _intersect(a: Box, b: Box) -> Box | None:
    y0, y1 = max(a[0], b[0]), min(a[1], b[1])
    x0, x1 = max(a[2], b[2]), min(a[3], b[3])
    return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None


def _local(tile: Tile, box: Box) -> tuple[slice, slice]:
    y0, x0 = tile.object_origin
    return slice(box[0] - y0, box[1] - y0), slice(box[2] - x0, box[3] - x0)


def _ramp_field(box: Box, ramp: Sequence[float]) -> np.ndarray:
    yy = np.arange(box[0], box[1], dtype=np.float64)[:, None]
    xx = np.arange(box[2], box[3], dtype=np.float64)[None, :]
    return np.exp(1j * (ramp[0] * yy + ramp[1] * xx))


def _solve_graph(
    n: int,
    edges: list[tuple[int, int, float, np.ndarray]],
    *,
    k: int,
    wrapped: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted least squares for ``x_i - x_j = d_ij`` with ``x_0 = 0``; ``x`` is ``(n, k)``.

    Components flagged in ``wrapped`` are angles known modulo 2 pi: they are first
    integrated along a maximum-weight spanning tree, and only the (small, wrapped)
    loop residuals go to least squares, so a 2 pi ambiguity never spreads over the graph.
    """
    x0 = np.zeros((n, k))
    if n == 1 or not edges:
        return x0
    wrapped = np.zeros(k, bool) if wrapped is None else np.asarray(wrapped, bool)
    # Prim's algorithm from tile 0 over the heaviest edges.
    seen = {0}
    while True:
        best = None
        for i, j, w, d in edges:
            if (i in seen) != (j in seen) and (best is None or w > best[2]):
                best = (i, j, w, d)
        if best is None:
            break
        i, j, _w, d = best
        if i in seen:
            x0[j] = x0[i] - d
            seen.add(j)
        else:
            x0[i] = x0[j] + d
            seen.add(i)
    a = np.zeros((len(edges) + 1, n))
    b = np.zeros((len(edges) + 1, k))
    for row, (i, j, w, d) in enumerate(edges):
        r = d - (x0[i] - x0[j])
        r = np.where(wrapped, np.angle(np.exp(1j * r)), r)
        sw = np.sqrt(w)
        a[row, i], a[row, j], b[row] = sw, -sw, sw * r
    a[-1, 0] = 1.0  # gauge: the first tile is the reference
    return x0 + np.linalg.lstsq(a, b, rcond=None)[0]


class _TileCache:
    """``index -> (object, weight, max weight)`` of the tiles, read through ``load`` and
    kept for the ``size`` most recently used (least recently used dropped first)."""

    def __init__(self, load: Loader, ids: Sequence[str], size: int):
        self.load, self.ids, self.size = load, list(ids), max(int(size), 2)
        self.kept: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}

    def __call__(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        if k in self.kept:
            self.kept[k] = self.kept.pop(k)  # now the most recently used
        else:
            if len(self.kept) >= self.size:
                del self.kept[next(iter(self.kept))]
            obj, weight = self.load(self.ids[k])
            self.kept[k] = (obj, weight, float(np.max(weight)))
        return self.kept[k]


def solve_corrections(
    tiles: Sequence[Tile], load: Loader, *, ramps: bool = True, min_weight: float = 1e-2
) -> dict[str, TileCorrection]:
    """Per-tile complex scale and phase ramp making overlapping tiles agree.

    Parameters
    ----------
    tiles : tiles with their global canvases
    load : callable ``tile_id -> (object, weight)``, both on the tile canvas; ``weight``
        is the illumination (e.g. summed ``|P|^2``) and marks where the tile is trusted.
    ramps : also remove relative linear phase ramps
    min_weight : overlap pixels where either tile's weight is below this fraction of
        that tile's maximum are ignored (a Fourier tile's guard band, weighted 1e-3, and
        nearly unlit pixels: ``sqrt(w_i w_j)`` let a guard pixel next to a trusted one
        count at ~0.03).

    Returns
    -------
    dict tile_id -> :class:`TileCorrection`.
    """
    n = len(tiles)
    boxes = [(i, j, box) for i in range(n) for j in range(i + 1, n)
             if (box := _intersect(_box_of(tiles[i]), _box_of(tiles[j]))) is not None]
    # Tiles are read as the pairs need them and only a band of them stays in memory (a
    # gigapixel plan holds hundreds): the pairs run tile by tile and a tile's partners lie
    # within ``span`` places of it in the plan's order (a raster grid's row + 1), so
    # between two uses of a tile fewer than ``2 span + 2`` others are read, and each
    # pass (ramps, then scales with the ramps applied) reads every tile once.
    span = max((j - i for i, j, _ in boxes), default=0)
    tile_data = _TileCache(load, [t.tile_id for t in tiles], size=2 * span + 2)

    def overlaps():
        for i, j, box in boxes:
            oi, wi, mi = tile_data(i)
            oj, wj, mj = tile_data(j)
            oi, wi = oi[_local(tiles[i], box)], np.clip(wi[_local(tiles[i], box)], 0, None)
            oj, wj = oj[_local(tiles[j], box)], np.clip(wj[_local(tiles[j], box)], 0, None)
            trusted = (wi >= min_weight * mi) & (wj >= min_weight * mj)
            w = np.where(trusted, np.sqrt(wi * wj), 0.0)
            if w.max() > 0:
                yield i, j, box, oi, oj, w

    ramp = np.zeros((n, 2))
    if ramps:
        edges = []
        for i, j, _box, oi, oj, w in overlaps():
            z = oi * np.conj(oj)
            # Ramp difference from the weighted mean phase step of z along each axis.
            gy = np.angle(np.sum(w[1:] * w[:-1] * z[1:] * np.conj(z[:-1])))
            gx = np.angle(np.sum(w[:, 1:] * w[:, :-1] * z[:, 1:] * np.conj(z[:, :-1])))
            # O_i carries ramp d more than O_j, so x_i - x_j = -d.
            edges.append((i, j, float(w.sum()), -np.array([gy, gx])))
        ramp = _solve_graph(n, edges, k=2)

    edges = []
    for i, j, box, oi, oj, w in overlaps():
        ci = oi * _ramp_field(box, ramp[i])
        cj = oj * _ramp_field(box, ramp[j])
        # |c| from the two tiles' overlap energies, its phase from their cross term: a
        # one-sided least-squares ratio shrinks |c| by 1 / (1 + noise / signal) per seam,
        # and the shrinkage compounds away from the reference tile
        cross = np.sum(w * ci * np.conj(cj))
        ei, ej = np.sum(w * np.abs(ci) ** 2), np.sum(w * np.abs(cj) ** 2)
        if abs(cross) == 0 or ei <= 0 or ej <= 0:
            continue
        c = np.sqrt(ei / ej) * np.exp(1j * np.angle(cross))
        # g_i c = g_j  =>  log g_i - log g_j = -log c (amplitude and phase separately).
        edges.append((i, j, float(w.sum()), -np.array([np.log(abs(c)), np.angle(c)])))
    logg = _solve_graph(n, edges, k=2, wrapped=[False, True])
    return {
        t.tile_id: TileCorrection(
            scale=complex(np.exp(logg[k, 0]) * np.exp(1j * logg[k, 1])),
            ramp=(float(ramp[k, 0]), float(ramp[k, 1])),
        )
        for k, t in enumerate(tiles)
    }


def feather(tile: Tile, *, eps: float = 1e-3) -> np.ndarray:
    """The mosaic's blend taper of one tile; :func:`stitch_region` multiplies it with the
    tile's illumination weight. The only taper of the stitching path.

    Parameters
    ----------
    tile : Tile
        Its canvas (``object_origin``, ``object_shape``) and ``core``, in mosaic pixels.
    eps : float
        Floor of the weight (dimensionless), so a pixel only this tile sees keeps a value.

    Returns
    -------
    numpy.ndarray
        float64 ``object_shape``, dimensionless, separable in y and x: 1 inside the core,
        falling linearly with the distance ``d`` (pixels) outside it as ``1 - d / (m + 1)``,
        ``m`` the tile's widest margin (pixels) along that axis, so the tile's poorly
        constrained border yields to its neighbours.
    """
    y0, x0 = tile.object_origin
    h, w = tile.object_shape
    cy0, cy1, cx0, cx1 = tile.core
    yy = np.arange(y0, y0 + h)
    xx = np.arange(x0, x0 + w)
    dy = np.maximum(np.maximum(cy0 - yy, yy - (cy1 - 1)), 0).astype(float)
    dx = np.maximum(np.maximum(cx0 - xx, xx - (cx1 - 1)), 0).astype(float)
    my = max(cy0 - y0, y0 + h - cy1, 1)
    mx = max(cx0 - x0, x0 + w - cx1, 1)
    fy = np.clip(1 - dy / (my + 1), eps, 1)
    fx = np.clip(1 - dx / (mx + 1), eps, 1)
    return fy[:, None] * fx[None, :]


def stitch_region(
    box: Box,
    tiles: Sequence[Tile],
    load: Loader,
    corrections: dict[str, TileCorrection] | None = None,
    *,
    fill: complex = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend all tiles over ``box`` of the mosaic.

    Returns
    -------
    mosaic : complex64 ``(y1 - y0, x1 - x0)``
        Illumination- and feather-weighted mean of the corrected tiles; ``fill`` where no
        tile has weight.
    weight : float32, same shape: the feather-weighted mean illumination of the tiles that
        see the pixel (0 = unseen). The illumination summed over tiles would count the frames
        two or four tiles share that many times where their cores meet, so the trusted mask
        (a fraction of the peak) would shrink with the tile grid.
    """
    shape = (box[1] - box[0], box[3] - box[2])
    num = np.zeros(shape, np.complex128)
    den = np.zeros(shape, np.float64)
    fsum = np.zeros(shape, np.float64)
    for t in tiles:
        part = _intersect(box, _box_of(t))
        if part is None:
            continue
        obj, wgt = load(t.tile_id)
        sl = _local(t, part)
        illum, taper = np.clip(wgt[sl], 0, None), feather(t)[sl]
        f = illum * taper
        o = obj[sl].astype(np.complex128)
        if corrections is not None:
            c = corrections[t.tile_id]
            o = c.scale * _ramp_field(part, c.ramp) * o
        dst = (slice(part[0] - box[0], part[1] - box[0]), slice(part[2] - box[2], part[3] - box[2]))
        num[dst] += f * o
        den[dst] += f
        fsum[dst] += np.where(illum > 0, taper, 0.0)
    seen = den > 0
    out = np.full(shape, fill, np.complex128)
    out[seen] = num[seen] / den[seen]
    weight = np.zeros(shape, np.float64)
    weight[seen] = den[seen] / fsum[seen]
    return out.astype(np.complex64), weight.astype(np.float32)


def mosaic_shape(tiles: Sequence[Tile]) -> tuple[int, int]:
    """Shape of the global canvas holding every tile (from the origin)."""
    y1 = max(t.object_origin[0] + t.object_shape[0] for t in tiles)
    x1 = max(t.object_origin[1] + t.object_shape[1] for t in tiles)
    return int(y1), int(x1)
