"""Splitting a dataset into independent reconstruction tiles: the planners each modality
picks from (``modality_of(data).plan_tiles``, :mod:`ptytasks.modalities`).

Scanning-probe modalities (far-field, near-field): a tile is a group of scan positions;
its object canvas is the bounding box of their probe windows, and neighbouring tiles share
positions within an overlap margin measured in probe widths.

Full-frame modalities (coded, Fourier): a tile is a region of the detector plane cropped
from every frame, with a margin for the propagation blur (coded) or as its own
field-of-view with its own pupil (Fourier).

Every tile owns a *core* region of the global object (the cores partition the scanned
area); stitching feathers across the margins. Coordinates: object pixels, ``(y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ptytasks.data import PtychoData

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


@dataclass(frozen=True)
class Tile:
    """One independent reconstruction task.

    Attributes
    ----------
    tile_id : str
        ``"t{iy:02d}{ix:02d}"``-style stable name (store group and task key).
    grid_index : (iy, ix)
    frame_indices : int array
        Frames of the (subsampled) dataset used by this tile.
    object_origin : (y0, x0)
        Global object pixel of the tile canvas's ``[0, 0]``.
    object_shape : (h, w)
        Tile canvas shape, object pixels.
    core : Box
        Global region this tile owns in the stitched mosaic.
    frame_crop : Box or None
        Detector region cropped from every frame (full-frame modalities).
    guard : int
        Coded and Fourier ptychography: detector pixels at each edge of the crop whose
        measurements the tile does not enforce. The tile images its crop as if it were
        periodic, so near the crop's edge the measured light (from specimen outside the
        crop) and the model's (wrapped round from the other side) differ; that band is left
        free. Fourier tiles have one at the camera field's own edge too.
    """

    tile_id: str
    grid_index: tuple[int, int]
    frame_indices: np.ndarray = field(repr=False)
    object_origin: tuple[int, int]
    object_shape: tuple[int, int]
    core: Box
    frame_crop: Box | None = None
    guard: int = 0

    def to_dict(self) -> dict:
        """JSON-friendly description (small: safe as a Prefect result)."""
        extra = {"guard": self.guard} if self.guard else {}  # old tiles keep their keys
        return {
            "tile_id": self.tile_id,
            "grid_index": list(self.grid_index),
            "frame_indices": self.frame_indices.tolist(),
            "object_origin": list(self.object_origin),
            "object_shape": list(self.object_shape),
            "core": list(self.core),
            "frame_crop": None if self.frame_crop is None else list(self.frame_crop),
            **extra,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Tile:
        return cls(
            tile_id=d["tile_id"],
            grid_index=tuple(d["grid_index"]),
            frame_indices=np.asarray(d["frame_indices"], dtype=np.int64),
            object_origin=tuple(d["object_origin"]),
            object_shape=tuple(d["object_shape"]),
            core=tuple(d["core"]),
            frame_crop=None if d["frame_crop"] is None else tuple(d["frame_crop"]),
            guard=int(d.get("guard", 0)),
        )


def _edges(lo: float, hi: float, n: int) -> np.ndarray:
    """``n + 1`` integer cut points splitting ``[lo, hi)`` into near-equal parts."""
    return np.round(np.linspace(lo, hi, n + 1)).astype(int)


def plan_scanning_tiles(
    positions: np.ndarray,
    probe_shape: tuple[int, int],
    grid: tuple[int, int],
    *,
    margin_probe_widths: float = 0.5,
) -> list[Tile]:
    """Tiles for a scanning-probe dataset.

    Parameters
    ----------
    positions : (n, 2)
        Window corners, object pixels.
    probe_shape : (py, px)
        Probe window, pixels.
    grid : (ny, nx)
        Number of tiles along y and x.
    margin_probe_widths : float
        A tile takes every position whose probe centre lies within its core widened by
        this many probe widths.

    Returns
    -------
    list of :class:`Tile`; empty tiles are dropped.
    """
    py, px = probe_shape
    centres = positions + np.array([py, px]) / 2.0
    lo = np.floor(positions.min(0)).astype(int)
    hi = np.ceil(positions.max(0)).astype(int) + np.array([py, px])
    cy_lo, cx_lo = centres.min(0)
    cy_hi, cx_hi = centres.max(0) + 1e-6
    ey, ex = _edges(cy_lo, cy_hi, grid[0]), _edges(cx_lo, cx_hi, grid[1])
    ey[0], ex[0], ey[-1], ex[-1] = lo[0], lo[1], hi[0], hi[1]  # cores cover the whole canvas
    margin = margin_probe_widths * np.array([py, px])
    tiles = []
    for iy in range(grid[0]):
        for ix in range(grid[1]):
            core = (int(ey[iy]), int(ey[iy + 1]), int(ex[ix]), int(ex[ix + 1]))
            sel = (
                (centres[:, 0] >= core[0] - margin[0])
                & (centres[:, 0] < core[1] + margin[0])
                & (centres[:, 1] >= core[2] - margin[1])
                & (centres[:, 1] < core[3] + margin[1])
            )
            idx = np.flatnonzero(sel)
            if idx.size == 0:
                continue
            t_lo = np.floor(positions[idx].min(0)).astype(int)
            # +1: sub-pixel positions reach one pixel past the integer corner.
            t_hi = np.ceil(positions[idx].max(0)).astype(int) + np.array([py, px]) + 1
            t_hi = np.minimum(t_hi, hi + 1)
            tiles.append(
                Tile(
                    tile_id=f"t{iy:02d}{ix:02d}",
                    grid_index=(iy, ix),
                    frame_indices=idx,
                    object_origin=(int(t_lo[0]), int(t_lo[1])),
                    object_shape=(int(t_hi[0] - t_lo[0]), int(t_hi[1] - t_lo[1])),
                    core=core,
                )
            )
    return tiles


def plan_fullframe_tiles(
    frame_shape: tuple[int, int],
    grid: tuple[int, int],
    *,
    margin_px: int,
    positions: np.ndarray | None = None,
    upsample: int = 1,
    guard_px: int = 0,
) -> list[Tile]:
    """Tiles for coded (``positions`` given) or Fourier (``upsample`` > 1) ptychography.

    Parameters
    ----------
    frame_shape : (ny, nx)
        Detector frame shape, pixels.
    grid : (ny, nx)
        Tiles along each axis.
    margin_px : int
        Detector pixels added on every side of a tile's crop: the propagation blur
        (coded) or the field-of-view overlap (Fourier).
    positions : (n, 2) or None
        Coded ptychography: specimen translations as window corners in object pixels.
    upsample : int
        Object pixels per detector pixel (Fourier ptychography); 1 for coded.
    guard_px : int
        Coded: the :attr:`Tile.guard` band (pixels, inside the margin) of every tile when
        there is more than one.
    """
    ny, nx = frame_shape
    if grid[0] > ny or grid[1] > nx:
        raise ValueError(f"a {grid[0]} x {grid[1]} tile grid cuts the {ny} x {nx} px frames "
                         "into empty crops: at most one tile per detector pixel along each "
                         "axis")  # fmt: skip
    ey, ex = _edges(0, ny, grid[0]), _edges(0, nx, grid[1])
    n = 1 if positions is None else len(positions)
    pmin = np.zeros(2, int) if positions is None else np.floor(positions.min(0)).astype(int)
    pmax = np.zeros(2, int) if positions is None else np.ceil(positions.max(0)).astype(int)
    pmean = np.zeros(2) if positions is None else positions.mean(0)
    tiles = []
    for iy in range(grid[0]):
        for ix in range(grid[1]):
            crop = (
                max(0, ey[iy] - margin_px),
                min(ny, ey[iy + 1] + margin_px),
                max(0, ex[ix] - margin_px),
                min(nx, ex[ix + 1] + margin_px),
            )
            origin = (int(pmin[0] + crop[0] * upsample), int(pmin[1] + crop[2] * upsample))
            shape = (
                int((crop[1] - crop[0]) * upsample + pmax[0] - pmin[0] + (positions is not None)),
                int((crop[3] - crop[2]) * upsample + pmax[1] - pmin[1] + (positions is not None)),
            )

            # Cores follow the detector partition, shifted by the mean translation, so they
            # partition the object where it was seen most.
            def cut(e, k, axis):
                return (
                    int(round(pmean[axis] + e[k] * upsample))
                    if 0 < k < len(e) - 1
                    else (
                        int(pmin[axis])
                        if k == 0
                        else int(pmax[axis] + e[k] * upsample + (positions is not None))
                    )
                )

            core = (cut(ey, iy, 0), cut(ey, iy + 1, 0), cut(ex, ix, 1), cut(ex, ix + 1, 1))
            tiles.append(
                Tile(
                    tile_id=f"t{iy:02d}{ix:02d}",
                    grid_index=(iy, ix),
                    frame_indices=np.arange(n) if positions is not None else np.arange(0),
                    object_origin=origin,
                    object_shape=shape,
                    core=core,
                    frame_crop=tuple(int(c) for c in crop),
                    guard=int(guard_px) if grid[0] * grid[1] > 1 else 0,
                )
            )
    return tiles


def guard_mask(shape: tuple[int, int], guard: int) -> np.ndarray:
    """Bool ``shape``: True except in a band of ``guard`` pixels along every edge."""
    m = np.zeros(shape, bool)
    g = int(guard)
    m[g : shape[0] - g, g : shape[1] - g] = True
    return m


def _crop_frames(frames, box: Box, block_bytes: int = 64 * 2**20) -> np.ndarray:
    """``frames[:, y0:y1, x0:x1]`` as float32; lazy frames are read a block of whole
    frames (at most ``block_bytes``) at a time, so a small crop of a big stack stays small."""
    y0, y1, x0, x1 = box
    if isinstance(frames, np.ndarray):
        return np.ascontiguousarray(frames[:, y0:y1, x0:x1], dtype=np.float32)
    n, ny, nx = frames.shape
    out = np.empty((n, y1 - y0, x1 - x0), np.float32)
    per = max(1, block_bytes // (ny * nx * 4))
    for s in range(0, n, per):
        out[s : s + per] = np.asarray(frames[s : s + per])[:, y0:y1, x0:x1]
    return out


def tile_dataset(data: PtychoData, tile: Tile) -> PtychoData:
    """The sub-dataset a tile reconstructs, in the tile's local object coordinates."""
    sub = data.subset(tile.frame_indices)
    if not isinstance(sub.frames, np.ndarray) and tile.frame_crop is None:
        sub.frames = np.asarray(sub.frames, dtype=np.float32)  # only this tile's frames
    origin = np.array(tile.object_origin, dtype=np.float64)
    shift = origin.copy()
    if tile.frame_crop is not None:  # coded: the crop's window starts crop-offset later
        shift -= np.array([tile.frame_crop[0], tile.frame_crop[2]], dtype=np.float64)
    if tile.frame_crop is not None:
        y0, y1, x0, x1 = tile.frame_crop
        sub.frames = _crop_frames(sub.frames, tile.frame_crop)
        if sub.probe is not None and sub.probe.shape == data.frame_shape:
            sub.probe = sub.probe[y0:y1, x0:x1]
        surface = sub.meta.get("surface")
        if isinstance(surface, np.ndarray) and surface.shape == data.frame_shape:
            sub.meta["surface"] = surface[y0:y1, x0:x1]  # the coded surface is on the sensor
        mask = sub.meta.get("mask")
        if isinstance(mask, np.ndarray) and mask.shape == data.frame_shape:
            sub.meta["mask"] = mask[y0:y1, x0:x1]
        if tile.guard:
            sub.meta["tile_mask"] = guard_mask((y1 - y0, x1 - x0), tile.guard)
    if sub.positions_px is not None:
        sub.positions_px = sub.positions_px - shift
    sub.object_shape = tuple(tile.object_shape)
    sub.meta = {**sub.meta, "tile": tile.tile_id, "object_origin": tile.object_origin}
    if data.ground_truth is not None and "object" in data.ground_truth:
        y0, x0 = tile.object_origin
        h, w = tile.object_shape
        gt = dict(data.ground_truth)
        gt["object"] = data.ground_truth["object"][y0 : y0 + h, x0 : x0 + w]
        if "positions_px" in gt:
            gt["positions_px"] = gt["positions_px"][tile.frame_indices] - shift
        sub.ground_truth = gt
    return sub


def tile_half(data: PtychoData, tile: Tile, half: str, split) -> PtychoData:
    """A tile's sub-dataset restricted to one half (``"a"`` or ``"b"``) of the *whole* scan.

    ``split`` = ``(idx_a, idx_b)``: the scan split once over all of ``data``'s frames by
    the modality's rule (:meth:`ptytasks.modalities.base.Modality.half_split`, which the
    caller passes; tiling sits below the modalities). Each tile keeps its own frames of
    that half, so every frame belongs to one half in every tile. Split inside each tile
    instead, a frame shared by two overlapping tiles lands in half a of one tile and half
    b of the other (local order and raster parity differ from tile to tile), and the two
    half mosaics share its noise where the tiles are blended: a correlation the half-data
    FRC reads as resolution.
    """
    if half not in ("a", "b"):
        raise ValueError(f"half must be 'a' or 'b', not {half!r}")
    own = split[0 if half == "a" else 1]
    keep = np.isin(tile.frame_indices, own)
    return tile_dataset(data, replace(tile, frame_indices=tile.frame_indices[keep]))
