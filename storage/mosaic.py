"""Concurrent, lossless assembly of the stitched mosaic from overlapping tiles.

This is the pipeline's one stitching path: ``flows.stages.stitch`` fits the tile
corrections and calls it. Zarr writes a shard as one file; two writers touching the same
shard would each read-modify-write it and one would silently lose the other's pixels. Hence:

1. **template first** -- :meth:`MosaicWriter.create` writes the (empty) arrays' metadata
   once, from one process: ``mosaic/level_0/object`` (y, x) complex64 and
   ``mosaic/level_0/weight`` (y, x) float32, chunked inside shards, plus coords in metres;
2. **one writer per shard** -- :meth:`MosaicWriter.write_region` accepts only regions made of
   whole shards (clipped at the array edge) and raises :class:`DataError` otherwise;
3. **overlaps are resolved per shard** -- :meth:`MosaicWriter.stitch` gives each shard to
   exactly one task, which loads every tile overlapping it from the store
   (:class:`TileLoader`), blends them with :func:`ptytasks.stitching.stitch_region`
   (corrected tiles weighted by illumination x :func:`ptytasks.stitching.feather`) and
   writes ``object = sum(w * object) / sum(w)`` and ``weight = sum(w)`` for that shard
   once. Tasks run serially or on a Dask client (``client.map``), in any order.

A multiscale pyramid (``level_1``, ``level_2``, ... each 2x coarser, weight-averaged)
is built afterwards, also shard by shard.

The mosaic group is an OME-Zarr 0.5 image (:mod:`storage.ome`): every level also holds
``amplitude_phase`` (c, y, x) float32, written by the same shard writer as ``object`` (so
the two never disagree), and the group's ``"ome"`` attribute lists the levels with their
scale in metres, for napari, neuroglancer and ``ome-zarr``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import zarr

from ptytasks.stitching import Loader, stitch_region
from storage import layout as L
from storage import ome
from storage.errors import DataError

if TYPE_CHECKING:
    from ptytasks.stitching import TileCorrection
    from ptytasks.tiling import Tile

__all__ = ["MosaicWriter", "TileLoader"]


class TileLoader:
    """``tile_id -> (object, weight)``: a tile's reconstruction, read whole from the run
    store at ``path``, group ``steps[tile_id]``.

    ``object`` is complex64 and ``weight`` float32 (dimensionless illumination,
    :func:`ptytasks.calibration.tile_weight`), both on the tile canvas in object pixels.
    A multislice tile (object ``(slice, y, x)``) gives slice ``slice_index``, or with None
    the product of its slices: the specimen's transmission in the projection approximation.
    Small and picklable (path and group names only), so each shard task on a Dask worker
    opens the store itself.
    """

    def __init__(self, path: str | os.PathLike, steps: Mapping[str, str],
                 slice_index: int | None = None):  # fmt: skip
        self.path = os.path.abspath(path)  # a worker may have another working directory
        self.steps = dict(steps)
        self.slice_index = slice_index

    def __call__(self, tile_id: str) -> tuple[np.ndarray, np.ndarray]:
        g = zarr.open_group(self.path, mode="r")[self.steps[tile_id]]
        obj = g["object"]
        if obj.ndim == 3:
            obj = obj[...].prod(0) if self.slice_index is None else obj[self.slice_index]
        return np.asarray(obj[...], np.complex64), g["weight"][...]

    def n_slices(self) -> int:
        """Object slices per tile (1 for a thin specimen)."""
        g = zarr.open_group(self.path, mode="r")[next(iter(self.steps.values()))]
        return int(g["object"].shape[0]) if g["object"].ndim == 3 else 1


class MosaicWriter:
    """Writer of ``<name>/level_<k>`` arrays of a run store at ``path``.

    Instances are small and picklable (path and names only), so they can be sent to Dask
    workers; every method opens the store itself.
    """

    #: What a finished mosaic holds; part of the mosaic step's fingerprint, so a mosaic
    #: written before the OME image existed is rebuilt on the next run, not kept as is.
    #: "blend-2": the weight is the feather-weighted mean illumination, the tile scales
    #: come from overlap energies, and coarse levels read the fill where unseen.
    FORMAT = f"ome-zarr-{ome.OME_VERSION}/{ome.IMAGE}/blend-2"

    def __init__(self, path: str | os.PathLike, name: str = L.MOSAIC):
        self.path = os.path.abspath(path)  # a worker may have another working directory
        self.name = name.strip("/")

    # ------------------------------------------------------------------ template
    @classmethod
    def create(
        cls, store, shape: tuple[int, int], *, pixel_size: float, origin=(0.0, 0.0),
        shard: tuple[int, int] = (512, 512), chunk: tuple[int, int] = (128, 128),
        name: str = L.MOSAIC,
    ) -> MosaicWriter:  # fmt: skip
        """Write the empty level-0 arrays (metadata only) and return a writer.

        ``store`` is a :class:`storage.store.RunStore` (inside its ``mosaic`` step) or a
        path. ``origin`` is the metric position (m) of pixel ``[0, 0]``; chunks must
        divide shards.
        """
        path = os.fspath(getattr(store, "path", store))
        if shard[0] % chunk[0] or shard[1] % chunk[1]:
            raise ValueError(f"chunk {chunk} must divide shard {shard}")
        w = cls(path, name)
        root = zarr.open_group(path, mode="a")
        g = root.require_group(name)
        g.attrs.update({
            "pixel_size": float(pixel_size), "origin": [float(v) for v in origin],
            "units": {"pixel_size": "m", "origin": "m"}, "shard": list(shard),
        })  # fmt: skip
        w._create_level(0, tuple(int(s) for s in shape), shard, chunk)
        w.write_ome(0, sample=False)  # valid OME from the start; build_pyramid adds levels
        return w

    def _create_level(self, k: int, shape, shard, chunk) -> None:
        root = zarr.open_group(self.path, mode="a")
        attrs = root[self.name].attrs.asdict()
        px, origin = attrs["pixel_size"], attrs["origin"]
        grp = f"{self.name}/level_{k}"
        sh = (min(shard[0], shape[0]), min(shard[1], shape[1]))
        ch = (min(chunk[0], sh[0]), min(chunk[1], sh[1]))
        sh = (sh[0] - sh[0] % ch[0], sh[1] - sh[1] % ch[1])
        for arr, dt, units in (("object", "complex64", "1"), ("weight", "float32", "1")):
            zarr.create_array(
                store=self.path, name=f"{grp}/{arr}", shape=shape, dtype=dt, chunks=ch,
                shards=sh, dimension_names=("y", "x"), fill_value=0, overwrite=True,
                attributes={"units": units, "level": k, "downsample": 2**k},
            )  # fmt: skip
        # The OME image: channels ride in the same shard as their pixels (one writer each).
        zarr.create_array(
            store=self.path, name=f"{grp}/{ome.IMAGE}", shape=(len(ome.CHANNELS), *shape),
            dtype="float32", chunks=(1, *ch), shards=(len(ome.CHANNELS), *sh),
            dimension_names=("c", "y", "x"), fill_value=0, overwrite=True,
            attributes={"units": ", ".join(f"{u} ({c})" for c, u in
                                           zip(ome.CHANNELS, ome.CHANNEL_UNITS, strict=True)),
                        "channels": list(ome.CHANNELS), "level": k, "downsample": 2**k},
        )  # fmt: skip
        c = zarr.create_array(store=self.path, name=f"{grp}/c", shape=(len(ome.CHANNELS),),
                              dtype=str, dimension_names=("c",), overwrite=True)  # fmt: skip
        c[:] = np.asarray(ome.CHANNELS, dtype=str)
        f = 2**k
        for dim, n, o in (("y", shape[0], origin[0]), ("x", shape[1], origin[1])):
            c = zarr.create_array(store=self.path, name=f"{grp}/{dim}", shape=(n,),
                                  dtype="float64", chunks=(n,), dimension_names=(dim,),
                                  attributes={"units": "m"}, overwrite=True)  # fmt: skip
            c[:] = o + (np.arange(n) * f + (f - 1) / 2) * px

    def array(self, arr: str = "object", level: int = 0) -> zarr.Array:
        return zarr.open_array(self.path, path=f"{self.name}/level_{level}/{arr}", mode="r+")

    def shards(self, level: int = 0) -> list[tuple[slice, slice]]:
        """Every shard of ``level`` as a pair of slices (edge shards clipped)."""
        a = self.array("object", level)
        (ny, nx), (sy, sx) = a.shape, a.shards
        return [(slice(y, min(y + sy, ny)), slice(x, min(x + sx, nx)))
                for y in range(0, ny, sy) for x in range(0, nx, sx)]  # fmt: skip

    # ------------------------------------------------------------------ region writes
    def write_region(self, y0: int, x0: int, obj: np.ndarray, weight=None, level: int = 0):
        """Write whole shards at ``(y0, x0)``; misaligned regions raise :class:`DataError`."""
        a, wa = self.array("object", level), self.array("weight", level)
        (ny, nx), (sy, sx) = a.shape, a.shards
        h, w = obj.shape
        ok = (y0 % sy == 0 and x0 % sx == 0 and (h % sy == 0 or y0 + h == ny)
              and (w % sx == 0 or x0 + w == nx) and y0 + h <= ny and x0 + w <= nx)  # fmt: skip
        if not ok:
            raise DataError(
                self.path, f"{self.name}/level_{level}/object",
                f"region at ({y0}, {x0}) of shape {obj.shape} is not made of whole shards "
                f"{(sy, sx)} of the {(ny, nx)} mosaic; concurrent partial-shard writes would "
                "lose data (use stitch(), or align the region)",
            )  # fmt: skip
        obj = np.asarray(obj, np.complex64)
        a[y0 : y0 + h, x0 : x0 + w] = obj
        wt = np.ones(obj.shape, np.float32) if weight is None else np.asarray(weight, np.float32)
        wa[y0 : y0 + h, x0 : x0 + w] = wt
        img = self.array(ome.IMAGE, level)
        img[:, y0 : y0 + h, x0 : x0 + w] = np.stack([np.abs(obj), np.angle(obj)])

    # ------------------------------------------------------------------ stitching
    def stitch(
        self, tiles: Sequence[Tile], load: Loader,
        corrections: Mapping[str, TileCorrection] | None = None, *, fill: complex = 1.0,
        client=None,
    ) -> None:  # fmt: skip
        """Blend ``tiles`` into every shard of level 0, each shard by exactly one task.

        Parameters
        ----------
        tiles : sequence of :class:`ptytasks.tiling.Tile`
            Tiles placed by their ``object_origin`` (mosaic pixels).
        load : callable ``tile_id -> (object, weight)``
            Usually a :class:`TileLoader`; must be picklable when ``client`` is given.
        corrections : mapping ``tile_id -> TileCorrection``, optional
            Complex scale and phase ramp (rad/pixel) applied to each tile; None: as stored.
        fill : complex
            Object value (dimensionless transmission) where no tile has weight; those
            pixels keep weight 0. 1 is free space.
        client : dask.distributed.Client, optional
            Shards run as ``client.map`` tasks on it; serially here when None.
        """
        # Every shard, even one no tile reaches: it gets ``fill`` (the template holds 0);
        # the pyramid's unseen pixels read it too
        zarr.open_group(self.path, mode="a")[self.name].attrs["fill"] = [float(np.real(fill)),
                                                                         float(np.imag(fill))]
        jobs = self.shards()
        if client is None:
            for s in jobs:
                self._stitch_shard(s, tiles, load, corrections, fill)
        else:
            client.gather(client.map(self._stitch_shard, jobs, tiles=tiles, load=load,
                                     corrections=corrections, fill=fill, pure=False))  # fmt: skip

    def _stitch_shard(self, shard: tuple[slice, slice], tiles, load, corrections, fill) -> None:
        ys, xs = shard
        box = (ys.start, ys.stop, xs.start, xs.stop)
        obj, weight = stitch_region(box, tiles, load, corrections, fill=fill)
        self.write_region(ys.start, xs.start, obj, weight)

    # ------------------------------------------------------------------ pyramid
    def build_pyramid(self, levels: int | None = None, client=None, min_size: int = 64,
                      max_pixels: int | None = None) -> int:
        """Levels 1.. by weighted 2x2 averaging, until ``min_size`` on the short side and at
        least until a level holds at most ``max_pixels`` (default
        :data:`ptytasks.evaluation.MAX_EVAL_PIXELS`: the metrics' memory bound, which a
        strip-shaped mosaic would otherwise never get under); returns the count."""
        from ptytasks.evaluation import MAX_EVAL_PIXELS

        a0 = self.array("object", 0)
        if levels is None:
            levels = max(0, int(math.log2(max(1, min(a0.shape) / min_size))))
            limit = MAX_EVAL_PIXELS if max_pixels is None else int(max_pixels)
            while math.prod(-(-n // 2**levels) for n in a0.shape) > limit:
                levels += 1
        for k in range(1, levels + 1):
            prev = self.array("object", k - 1)
            shape = ((prev.shape[0] + 1) // 2, (prev.shape[1] + 1) // 2)
            self._create_level(k, shape, a0.shards, a0.chunks)
            jobs = self.shards(k)
            if client is None:
                for s in jobs:
                    self._downsample_shard(k, s)
            else:
                client.gather(client.map(self._downsample_shard, [k] * len(jobs), jobs,
                                         pure=False))  # fmt: skip
        self.write_ome(levels)
        return levels

    def write_ome(self, levels: int, sample: bool = True) -> None:
        """Write the group's OME-Zarr 0.5 ``"ome"`` attribute for levels ``0..levels``.

        With ``sample``, the amplitude display window comes from the coarsest level's
        covered pixels (weight > 0), read with a stride that keeps it to ~1 Mpixel (a
        gigapixel level 0 is never loaded whole); else a default window is written.
        """
        amp = None
        if sample:
            wa = self.array("weight", levels)
            s = max(1, math.ceil(math.sqrt(wa.size / 2**20)))
            amp = self.array(ome.IMAGE, levels)[0, ::s, ::s][wa[::s, ::s] > 0]
        g = zarr.open_group(self.path, mode="a")[self.name]
        a = g.attrs.asdict()
        g.attrs["ome"] = ome.image_attrs(self.name.rsplit("/", 1)[-1], levels,
                                         pixel_size=a["pixel_size"], origin=a["origin"],
                                         amplitude=amp)  # fmt: skip

    def _downsample_shard(self, k: int, shard: tuple[slice, slice]) -> None:
        from ptytasks.evaluation import halve_weighted  # (the metrics' imports: on demand)

        ys, xs = shard
        src = (slice(2 * ys.start, 2 * ys.stop), slice(2 * xs.start, 2 * xs.stop))
        o = self.array("object", k - 1)[src]
        w = self.array("weight", k - 1)[src]
        re, im = zarr.open_group(self.path, mode="r")[self.name].attrs.get("fill", [0.0, 0.0])
        # the shard's source rows are whole or end at the level's (odd) edge: one rule with
        # the metrics' reduction of the truth
        obj, weight = halve_weighted(o, w, complex(re, im))
        self.write_region(ys.start, xs.start, obj, weight, level=k)
