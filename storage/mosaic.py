"""Concurrent, lossless assembly of a mosaic from overlapping tiles.

Zarr writes a shard as one file; two writers touching the same shard would each
read-modify-write it and one would silently lose the other's pixels. Hence:

1. **template first** -- :meth:`MosaicWriter.create` writes the (empty) arrays' metadata
   once, from one process: ``mosaic/level_0/object`` (y, x) complex64 and
   ``mosaic/level_0/weight`` (y, x) float32, chunked inside shards, plus coords in metres;
2. **one writer per shard** -- :meth:`MosaicWriter.write_region` accepts only regions made of
   whole shards (clipped at the array edge) and raises :class:`DataError` otherwise;
3. **overlaps are resolved per shard** -- :meth:`MosaicWriter.assemble` gives each shard to
   exactly one task, which reads the windows of every tile overlapping it straight from the
   store, accumulates ``sum(w * object)`` and ``sum(w)``, and writes
   ``object = sum(w * object) / sum(w)`` and ``weight = sum(w)`` for that shard once.
   Tasks run serially or on a Dask client (``client.map``), in any order.

Tile weights: the tile group's ``weight`` array if present, else a separable raised-cosine
taper of ``taper`` pixels at the tile edges (``taper=0``: uniform, a plain average).
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import zarr

from storage import ome
from storage.errors import DataError

__all__ = ["MosaicWriter", "TileRef", "taper_window"]


@dataclass(frozen=True)
class TileRef:
    """A reconstructed tile in the store: group ``name`` (holding ``object`` and optionally
    ``weight``) placed with its ``[0, 0]`` pixel at mosaic pixel ``(y0, x0)``."""

    name: str
    y0: int
    x0: int


def taper_window(shape: tuple[int, int], taper: int) -> np.ndarray:
    """Separable raised-cosine weights, rising over ``taper`` pixels at every edge."""
    out = []
    for n in shape:
        w = np.ones(n, np.float32)
        t = min(int(taper), n // 2)
        if t > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(t) + 0.5) / t)
            w[:t], w[n - t :] = ramp, ramp[::-1]
        out.append(w)
    return out[0][:, None] * out[1][None, :]


class MosaicWriter:
    """Writer of ``<name>/level_<k>`` arrays of a run store at ``path``.

    Instances are small and picklable (path and names only), so they can be sent to Dask
    workers; every method opens the store itself.
    """

    #: What a finished mosaic holds; part of the mosaic step's fingerprint, so a mosaic
    #: written before the OME image existed is rebuilt on the next run, not kept as is.
    FORMAT = f"ome-zarr-{ome.OME_VERSION}/{ome.IMAGE}"

    def __init__(self, path: str | os.PathLike, name: str = "mosaic"):
        self.path = os.fspath(path)
        self.name = name.strip("/")

    # ------------------------------------------------------------------ template
    @classmethod
    def create(
        cls, store, shape: tuple[int, int], *, pixel_size: float, origin=(0.0, 0.0),
        shard: tuple[int, int] = (512, 512), chunk: tuple[int, int] = (128, 128),
        name: str = "mosaic",
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
                "lose data (use assemble(), or align the region)",
            )  # fmt: skip
        obj = np.asarray(obj, np.complex64)
        a[y0 : y0 + h, x0 : x0 + w] = obj
        wt = np.ones(obj.shape, np.float32) if weight is None else np.asarray(weight, np.float32)
        wa[y0 : y0 + h, x0 : x0 + w] = wt
        img = self.array(ome.IMAGE, level)
        img[:, y0 : y0 + h, x0 : x0 + w] = np.stack([np.abs(obj), np.angle(obj)])

    # ------------------------------------------------------------------ assembly
    def plan(self, tiles: Iterable[TileRef]) -> list[tuple[tuple[slice, slice], list[TileRef]]]:
        """``[(shard, overlapping tiles)]`` for every shard touched by a tile."""
        root = zarr.open_group(self.path, mode="r")
        boxes = []
        for t in tiles:
            h, w = root[f"{t.name}/object"].shape
            boxes.append((t, t.y0, t.x0, t.y0 + h, t.x0 + w))
        out = []
        for ys, xs in self.shards():
            hit = [t for t, a, b, c, d in boxes
                   if a < ys.stop and c > ys.start and b < xs.stop and d > xs.start]  # fmt: skip
            if hit:
                out.append(((ys, xs), hit))
        return out

    def assemble_shard(self, shard: tuple[slice, slice], tiles: Sequence[TileRef],
                       taper: int = 0) -> float:  # fmt: skip
        """Blend every tile overlapping ``shard`` and write the shard; returns sum(weight)."""
        ys, xs = shard
        root = zarr.open_group(self.path, mode="r")
        num = np.zeros((ys.stop - ys.start, xs.stop - xs.start), np.complex128)
        den = np.zeros(num.shape, np.float64)
        for t in tiles:
            g = root[t.name]
            h, w = g["object"].shape
            y0, y1 = max(ys.start, t.y0), min(ys.stop, t.y0 + h)
            x0, x1 = max(xs.start, t.x0), min(xs.stop, t.x0 + w)
            if y0 >= y1 or x0 >= x1:
                continue
            win = (slice(y0 - t.y0, y1 - t.y0), slice(x0 - t.x0, x1 - t.x0))
            o = g["object"][win]
            wt = g["weight"][win] if "weight" in g else taper_window((h, w), taper)[win]
            dst = (slice(y0 - ys.start, y1 - ys.start), slice(x0 - xs.start, x1 - xs.start))
            num[dst] += wt * o
            den[dst] += wt
        obj = np.where(den > 0, num / np.where(den > 0, den, 1), 0)
        self.write_region(ys.start, xs.start, obj, den)
        return float(den.sum())

    def assemble(self, tiles: Iterable[TileRef], client=None, taper: int = 0) -> float:
        """Assemble all shards (on ``client`` when given); returns the total weight."""
        work = self.plan(list(tiles))
        if client is None:
            return sum(self.assemble_shard(s, t, taper) for s, t in work)
        futs = client.map(self.assemble_shard, [s for s, _ in work], [t for _, t in work],
                          taper=taper, pure=False)  # fmt: skip
        return float(sum(client.gather(futs)))

    # ------------------------------------------------------------------ pyramid
    def build_pyramid(self, levels: int | None = None, client=None, min_size: int = 64) -> int:
        """Levels 1.. by weighted 2x2 averaging, until ``min_size``; returns the count."""
        a0 = self.array("object", 0)
        if levels is None:
            levels = max(0, int(math.log2(max(1, min(a0.shape) / min_size))))
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
        ys, xs = shard
        src = (slice(2 * ys.start, 2 * ys.stop), slice(2 * xs.start, 2 * xs.stop))
        o = self.array("object", k - 1)[src].astype(np.complex128)
        w = self.array("weight", k - 1)[src].astype(np.float64)
        h, wd = (ys.stop - ys.start) * 2, (xs.stop - xs.start) * 2
        o = np.pad(o, ((0, h - o.shape[0]), (0, wd - o.shape[1])))
        w = np.pad(w, ((0, h - w.shape[0]), (0, wd - w.shape[1])))
        num = (o * w).reshape(h // 2, 2, wd // 2, 2).sum((1, 3))
        den = w.reshape(h // 2, 2, wd // 2, 2).sum((1, 3))
        obj = np.where(den > 0, num / np.where(den > 0, den, 1), 0)
        self.write_region(ys.start, xs.start, obj, den / 4, level=k)


def assemble_mosaic(
    store, tiles: Sequence[TileRef], shape: tuple[int, int], *, pixel_size: float,
    fingerprint_=None, origin=(0.0, 0.0), shard=(512, 512), chunk=(128, 128), taper: int = 0,
    levels: int | None = None, client=None, name: str = "mosaic",
) -> str:  # fmt: skip
    """Step ``name`` of ``store`` (a :class:`RunStore`): template, lossless concurrent
    assembly of ``tiles`` (each a complete step), pyramid, completion marker.

    Skipped when already complete for the same tiles and parameters; returns the step key.
    """
    tiles = list(tiles)
    params = {"tiles": [(t.name, t.y0, t.x0) for t in tiles], "shape": list(shape),
              "pixel_size": pixel_size, "origin": list(origin), "shard": list(shard),
              "chunk": list(chunk), "taper": taper, "levels": levels,
              "format": MosaicWriter.FORMAT}  # fmt: skip
    fp = fingerprint_ if fingerprint_ is not None else params
    with store.step(name, fp, depends_on=sorted({t.name for t in tiles})) as st:
        if not st.done:
            w = MosaicWriter.create(store, shape, pixel_size=pixel_size, origin=origin,
                                    shard=shard, chunk=chunk, name=name)  # fmt: skip
            w.assemble(tiles, client=client, taper=taper)
            w.build_pyramid(levels, client=client)
    return st.key
