"""The run store: one Zarr v3 hierarchy per reconstruction run (layout in ``layout``).

Typical use::

    store = RunStore.create("run.zarr")
    store.ingest("scan.cxi", z1=3.65e-3)          # streams frames into raw/ (step "raw")
    data = store.read_raw()                        # PtychoData back, frames in memory
    with store.step("reconstruct/tile_003", params, depends_on=["raw"]) as st:
        if not st.done:                            # skipped on a re-run with equal params
            st.write_array("object", obj, dims=("y", "x"))
    tree = store.open_datatree()                   # xarray DataTree of everything
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import zarr

from ptytasks.data import PtychoData
from ptytasks.lazy_frames import LazyFrames
from storage import layout as L
from storage import serial, trash
from storage.atomic import WRITING_ATTR, Step, fingerprint, read_whole
from storage.errors import DataError, wrap_errors
from storage.geometry import wavelength_to_energy_ev
from storage.lock import StoreLock
from storage.validate import check_frames, validate_data

__all__ = ["RunStore"]

_AXIS = np.array(["y", "x"], dtype="<U2")
_KAXIS = np.array(["ky", "kx"], dtype="<U2")
_SMALL = 16 * 2**20  # arrays below this are written as one chunk


class RunStore:
    """A run store at ``path`` (a directory, conventionally ``*.zarr``).

    Parameters
    ----------
    path : path-like
    mode : {"r", "a", "w"}
        ``"w"`` deletes an existing store; ``"a"`` opens or creates; ``"r"`` read-only.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "a"):
        self.path = Path(path)
        self.mode = mode
        if mode == "w" and self.path.exists():
            with StoreLock(self.path):  # never delete a store another run is writing
                trash.remove_store(self.path)
        if mode == "r" and not (self.path / "zarr.json").is_file():
            raise DataError(self.path, None, "is not a run store (no zarr.json)")
        with wrap_errors(self.path, None, "opening the run store"):
            self.root = zarr.open_group(str(self.path), mode="r" if mode == "r" else "a")
        if mode != "r" and "ptyflow_layout" not in self.root.attrs:
            self.root.attrs.update(
                {"ptyflow_layout": L.LAYOUT_VERSION, "conventions": "docs/conventions.md"}
            )

    @classmethod
    def create(cls, path, overwrite: bool = False) -> RunStore:
        """A new store; ``overwrite=False`` refuses to replace an existing one."""
        if Path(path).exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        return cls(path, mode="w")

    @classmethod
    def open(cls, path, mode: str = "r") -> RunStore:
        return cls(path, mode=mode)

    def lock(self, command: str | None = None) -> StoreLock:
        """This store's exclusive run lock (``with store.lock(): ...``); see
        :mod:`storage.lock`. Runs take it; their Dask workers write under it."""
        return StoreLock(self.path, command)

    # ------------------------------------------------------------------ groups, arrays
    def group(self, name: str) -> zarr.Group:
        """The group ``name`` (created when the store is writable)."""
        name = name.strip("/")
        if not name:
            return self.root
        if self.mode == "r":
            return self.root[name]
        return self.root.require_group(name)

    def exists(self, name: str) -> bool:
        try:
            self.root[name.strip("/")]
        except KeyError:
            return False
        return True

    def reset_group(self, name: str, attrs: Mapping | None = None) -> None:
        """Replace a step's marker by ``attrs`` (first, atomically), remove its old content,
        and create the group anew with ``attrs`` in its first ``zarr.json``."""
        attrs = dict(attrs or {})
        moved = None
        if self.exists(name):
            g = self.root[name]
            old = g.attrs.asdict()
            if L.STEP_ATTR in old:
                old.pop(L.STEP_ATTR)
                g.attrs.put({**old, **attrs})
            moved = self._move_out(name)
        self.root.create_group(name, attributes=attrs, overwrite=True)
        if moved is not None:  # deleted after the new group exists: no long gap for readers
            trash.discard(moved)

    def _move_out(self, name: str) -> Path | None:
        """Take group ``name`` out of the hierarchy; on a local store by one atomic rename
        into the store's trash (the bin is returned, for deletion; :mod:`storage.trash`), so
        a reader finds the whole old group or none -- never some arrays deleted and their
        chunks read as fill values. Where no rename is possible the group is deleted in
        place (its marker is already gone)."""
        store = self.root.store
        if isinstance(store, zarr.storage.LocalStore):
            moved = trash.move_aside(store.root, Path(store.root) / name)
            if moved is not None:
                return moved
        del self.root[name]
        return None

    def _snapshot(self, path: str, read):
        """``read()`` as one complete version of the step holding ``path``; see
        :func:`storage.atomic.read_whole`."""
        return read_whole(self, path, read)

    def write_array(
        self,
        group: str,
        name: str,
        array,
        dims: Iterable[str] | None = None,
        coords: Mapping[str, np.ndarray] | None = None,
        attrs: Mapping | None = None,
        units: str | None = None,
        chunks=None,
        shards=None,
    ) -> zarr.Array:
        """Write ``array`` to ``group/name`` with named dims, units and coords.

        Complex data is stored complex64. Arrays with ``iter_blocks`` or that are not
        NumPy arrays (h5py/zarr datasets, :class:`LazyFrames`) are copied in blocks along
        the first axis, shard by shard, so they are never fully in memory.

        Parameters
        ----------
        dims : names of the dimensions; default from :data:`storage.layout.DIMS`.
        coords : ``{dim: 1-D values}`` written as coordinate arrays of the same group.
        units : the ``units`` attribute; default from :data:`storage.layout.UNITS`.
        chunks, shards : Zarr chunk and shard shapes (default: one chunk when small).
        """
        streamed = not isinstance(array, np.ndarray) and hasattr(array, "shape")
        src = array if streamed else np.asarray(array)
        shape = tuple(int(s) for s in src.shape)
        dtype = np.dtype(src.dtype)
        if dtype.kind == "c":
            dtype = np.dtype(np.complex64)
        dims = tuple(dims) if dims is not None else L.dims_for(name, len(shape))
        if len(dims) != len(shape):
            raise ValueError(f"{group}/{name}: dims {dims} do not match shape {shape}")
        a = dict(attrs or {})
        u = units if units is not None else L.UNITS.get(name)
        if u:
            a.setdefault("units", u)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if chunks is None:
            chunks = tuple(max(1, s) for s in shape) if nbytes <= _SMALL else "auto"
        kw = {"shards": shards} if shards is not None else {}
        text = dtype.kind in "UT"  # variable-length UTF-8: the string type with a v3 spec
        z = zarr.create_array(
            store=self.root.store,
            name=f"{group.strip('/')}/{name}".strip("/"),
            shape=shape,
            dtype=str if text else dtype,
            chunks=chunks,
            dimension_names=dims,
            attributes=a,
            fill_value="" if text else np.zeros((), dtype)[()],
            overwrite=True,
            **kw,
        )
        if text:
            z[...] = np.asarray(src, dtype=str)
            return z
        if not shape:
            z[...] = np.asarray(src, dtype)
        elif streamed:
            step = (shards or z.chunks)[0]
            per = max(step, (L.WRITE_BLOCK_BYTES // max(1, nbytes // shape[0])) // step * step)
            for s in range(0, shape[0], per):
                z[s : s + per] = np.asarray(src[s : s + per], dtype)
        else:
            z[...] = src.astype(dtype, copy=False)
        for dim, values in (coords or {}).items():
            self.write_array(group, dim, np.asarray(values), dims=(dim,))
        return z

    def read_array(self, path: str) -> np.ndarray:
        """The array at ``path`` (``group/name``) in memory, from one complete version of
        its step (a step being rewritten is waited for briefly, else ``DataError``)."""
        with wrap_errors(self.path, path):
            return self._snapshot(path, lambda: self.root[path.strip("/")][...])

    # ------------------------------------------------------------------ steps
    def step(self, name: str, fingerprint_, depends_on: Iterable[str] = ()) -> Step:
        """Context manager writing step ``name``; see :class:`storage.atomic.Step`."""
        if self.mode == "r":
            raise PermissionError(f"{self.path} is open read-only")
        return Step(self, name, fingerprint_, depends_on)

    def marker(self, name: str) -> dict | None:
        """The completion marker of step ``name`` (``None`` when incomplete)."""
        if not self.exists(name):
            return None
        g = self.root[name.strip("/")]
        if not isinstance(g, zarr.Group):
            return None
        return g.attrs.get(L.STEP_ATTR)

    def is_complete(self, name: str, fingerprint_=None) -> bool:
        """True when ``name`` is complete, up to date with its upstream steps, and (when
        given) was made with this fingerprint."""
        m = self.marker(name)
        if m is None:
            return False
        if fingerprint_ is not None:
            fp = fingerprint_ if isinstance(fingerprint_, str) else fingerprint(fingerprint_)
            if m.get("fingerprint") != fp:
                return False
        for dep, key in m.get("depends_on", {}).items():
            dm = self.marker(dep)
            if dm is None or dm.get("key") != key or not self.is_complete(dep):
                return False
        return True

    def completed_steps(self) -> dict[str, dict]:
        """``{step name: marker}`` for every group carrying a marker."""
        out = {}
        for path, g in self.root.groups():
            stack = [(path, g)]
            while stack:
                p, grp = stack.pop()
                if L.STEP_ATTR in grp.attrs:
                    out[p] = grp.attrs[L.STEP_ATTR]
                stack.extend((f"{p}/{k}", v) for k, v in grp.groups())
        return out

    # ------------------------------------------------------------------ raw data
    def write_raw(self, data: PtychoData, fingerprint_=None, source=None,
                  detector_artefacts: bool = True) -> str:  # fmt: skip
        """Validate and write ``data`` as step ``raw``; return the step key.

        Lazy frames (:class:`LazyFrames`, h5py or zarr arrays) are streamed shard by
        shard and validated block by block. Skipped when ``raw`` is already complete
        with the same fingerprint (default: hash of metadata plus the frames, or of the
        source file's path/size/mtime for lazy frames, and ``detector_artefacts``).

        ``detector_artefacts``: for pixel-detector data
        (:attr:`~ptytasks.modalities.base.Modality.pixel_detector`) the split wide pixels
        and hot pixels found in the frames as they stream (:mod:`ptytasks.detector`) join
        the file's bad pixels in ``raw/mask``; what was found is the raw step's attribute
        ``detector_artefacts``.
        """
        src = source or data.meta.get("source")
        lazy = not isinstance(data.frames, np.ndarray)
        d = validate_data(data, src, check_values=not lazy)
        if fingerprint_ is None:
            from storage.readers.sources import frame_source_id, meta_id

            frames_id = frame_source_id(d.frames, d.meta) if lazy else {"frames": d.frames}
            # everything raw/ holds: the mask and other meta, the truth (the file's name is
            # in frames_id where the frames are read from it)
            js, arrays = serial.split_meta({k: v for k, v in d.meta.items() if k != "source"})
            fingerprint_ = fingerprint(meta_id(d), frames_id, js, arrays, d.ground_truth or {},
                                       {"detector_artefacts": bool(detector_artefacts)})
        with self.step(L.RAW, fingerprint_) as st:
            if not st.done:
                found = self._write_raw_arrays(d, src, lazy, detector_artefacts)
                st.set_attrs(**self._raw_attrs(d), detector_artefacts=found)
        return st.key

    def _write_raw_arrays(self, d: PtychoData, src, lazy: bool, artefacts: bool) -> dict | None:
        """Write raw's arrays; return the detector artefacts found (None: not looked for)."""
        from ptytasks.detector import ArtefactScan
        from ptytasks.modalities import modality_of

        n, ny, nx = d.frames.shape
        look = ArtefactScan() if artefacts and modality_of(d).pixel_detector else None
        k = int(np.clip(L.FRAME_SHARD_BYTES // (ny * nx * 4), 1, n))
        z = zarr.create_array(
            store=self.root.store, name=f"{L.RAW}/frames", shape=(n, ny, nx), dtype="float32",
            chunks=(1, ny, nx), shards=(k, ny, nx), dimension_names=L.DIMS["frames"],
            attributes={"units": "counts", "centred": True}, fill_value=0.0, overwrite=True,
            compressors=zarr.codecs.BloscCodec(**L.FRAME_CODEC),
        )  # fmt: skip
        per = k * max(1, L.WRITE_BLOCK_BYTES // (k * ny * nx * 4))  # whole shards per block
        for s in range(0, n, per):
            with wrap_errors(src, "frames", f"reading frames {s}..{min(s + per, n) - 1}"):
                block = np.asarray(d.frames[s : s + per], dtype=np.float32)
            if lazy:  # in-memory frames were checked by validate_data already
                check_frames(block, src, "frames")
            z[s : s + per] = block
            if look is not None:  # the same pass: lazily read frames are read once
                look.add(block)
            del block  # before the next read: one block in memory, not two
        meta = dict(d.meta)
        scan = np.asarray(meta.get("kept_indices", np.arange(n)), dtype=np.int64)
        scan = scan if scan.shape == (n,) else np.arange(n)
        self.write_array(L.RAW, "scan", scan)
        self.write_array(L.RAW, "axis", _AXIS)
        if d.positions_px is not None:
            self.write_array(L.RAW, "positions", d.positions_px)
        if d.wavevectors is not None:
            self.write_array(L.RAW, "kaxis", _KAXIS)
            self.write_array(L.RAW, "wavevectors", d.wavevectors)
        if d.probe is not None:
            self.write_array(L.RAW, "probe", d.probe)
        mask = meta.pop("mask", None)
        if mask is not None and np.shape(mask) != (ny, nx):
            raise DataError(src, "mask", f"detector mask of shape {np.shape(mask)} is not the "
                            f"frames' {(ny, nx)}")  # fmt: skip
        mask = None if mask is None else np.asarray(mask).astype(bool)
        found, report = look.result() if look is not None else (None, None)
        if found is not None:
            mask = found if mask is None else mask & found
        if mask is not None:
            self.write_array(L.RAW, "mask", mask)
        _, arrays = serial.split_meta(meta)
        for key, v in arrays.items():  # private dims: meta names must not clash with ours
            dims = tuple(f"meta_{key}_{i}" for i in range(v.ndim))
            self.write_array(f"{L.RAW}/meta", key, v, dims=dims, units="")
        for key, v in (d.ground_truth or {}).items():
            self.write_array(L.TRUTH, key, np.asarray(v))
        return report

    @staticmethod
    def _raw_attrs(d: PtychoData) -> dict:
        js, _ = serial.split_meta({k: v for k, v in d.meta.items() if k != "mask"})
        units = {k: L.META_UNITS[k] for k in L.META_UNITS if k not in d.params}
        units.update({f"params.{k}": L.META_UNITS.get(k, "m") for k in d.params})
        attrs = {
            "modality": d.modality,
            "wavelength": float(d.wavelength),
            "energy_ev": wavelength_to_energy_ev(d.wavelength),
            "pixel_size": float(d.pixel_size),
            "object_shape": [int(v) for v in d.object_shape],
            "distance": None if d.distance is None else float(d.distance),
            "detector_pixel": None if d.detector_pixel is None else float(d.detector_pixel),
            "params": {k: float(v) for k, v in d.params.items()},
            "meta": js,
            "units": units,
        }
        if "dose" in js:
            attrs["dose"] = js["dose"]
        return attrs

    def read_raw(self, lazy: bool = False, subsample: bool = False) -> PtychoData:
        """The raw data as :class:`PtychoData` (``lazy``: frames stay on disk).

        ``subsample=True`` returns only the frames kept by the ``subsample`` step. Eager
        reads are one complete version of ``raw`` (see :meth:`read_array`).
        """
        if lazy:
            return self._read_raw(True, subsample)
        return self._snapshot(L.RAW, lambda: self._read_raw(False, subsample))

    def _read_raw(self, lazy: bool, subsample: bool) -> PtychoData:
        if not self.is_complete(L.RAW):
            raise DataError(self.path, L.RAW, "raw data is missing or incomplete")
        with wrap_errors(self.path, L.RAW):
            g = self.root[L.RAW]
            a = g.attrs.asdict()
            fz = g["frames"]
            frames = LazyFrames(lambda s, e: fz[s:e], fz.shape) if lazy else fz[...]
            get = lambda key: g[key][...] if key in g else None
            meta = dict(a.get("meta", {}))
            if "meta" in g:
                meta.update({k: v[...] for k, v in g["meta"].arrays()})
            if "mask" in g:
                meta["mask"] = g["mask"][...]
            truth = None
            if "truth" in g:
                truth = {k: v[...] for k, v in g["truth"].arrays()}
            d = PtychoData(
                modality=a["modality"], frames=frames, wavelength=a["wavelength"],
                pixel_size=a["pixel_size"], object_shape=tuple(a["object_shape"]),
                positions_px=get("positions"), wavevectors=get("wavevectors"),
                distance=a.get("distance"), detector_pixel=a.get("detector_pixel"),
                probe=get("probe"), params=dict(a.get("params", {})), ground_truth=truth,
                meta=meta,
            )  # fmt: skip
        if subsample:
            if not self.is_complete(L.SUBSAMPLE):
                raise DataError(self.path, L.SUBSAMPLE, "no complete subsample step")
            d = d.subset(self.read_array(f"{L.SUBSAMPLE}/kept"))
        return d

    def ingest(self, path, fingerprint_=None, detector_artefacts: bool = True,
               **options) -> str:  # fmt: skip
        """Read ``path`` with :func:`storage.readers.read_any` lazily and stream it to raw
        (``detector_artefacts``: see :meth:`write_raw`).

        The default fingerprint covers every file the reader reads (size and mtime: frame
        folder members, positions sidecar or ``positions=`` file), what it read from them
        besides the frames (positions, probe, geometry), and ``options``: a corrected
        input is ingested anew, never answered from the old raw step."""
        from storage.readers import read_any

        if "lazy" in options:  # ptyflow's own: frames are always streamed
            raise DataError(path, "options.lazy", "is set by ptyflow (frames are streamed), "
                            "not a reader option")
        d = read_any(path, lazy=True, **options)
        if fingerprint_ is None:
            src = {"source": os.fspath(path)}
            from storage.readers.sources import frame_source_id, meta_id

            fingerprint_ = fingerprint(frame_source_id(None, src, options.get("positions")),
                                       meta_id(d), options,
                                       {"detector_artefacts": bool(detector_artefacts)})
        return self.write_raw(d, fingerprint_, source=path, detector_artefacts=detector_artefacts)

    # ------------------------------------------------------------------ other steps
    def write_subsample(self, kept, fingerprint_=None, **attrs) -> str:
        """Step ``subsample``: the kept frame indices (into ``raw``), after ``raw``."""
        kept = np.asarray(kept, dtype=np.int64)
        n = self.root[L.RAW]["frames"].shape[0] if self.exists(L.RAW) else 0
        if kept.ndim != 1 or (kept.size and (kept.min() < 0 or kept.max() >= n)):
            raise DataError(self.path, "subsample/kept", f"indices must be 1-D within [0, {n})")
        fp = fingerprint_ if fingerprint_ is not None else fingerprint(kept, attrs)
        with self.step(L.SUBSAMPLE, fp, depends_on=[L.RAW]) as st:
            if not st.done:
                st.write_array("kept", kept)
                st.set_attrs(**serial.to_jsonable(attrs))
        return st.key

    def write_group(self, name: str, arrays: Mapping, fingerprint_=None,
                    depends_on: Iterable[str] = (), attrs: Mapping | None = None,
                    dims: Mapping[str, tuple] | None = None) -> str:  # fmt: skip
        """A whole step in one call: arrays (standard dims unless ``dims`` says), scalar
        ``attrs``; used for priors, tiles, metrics. Returns the step key."""
        arrays = {k: v for k, v in arrays.items() if v is not None}
        fp = fingerprint_ if fingerprint_ is not None else fingerprint(arrays, attrs or {})
        with self.step(name, fp, depends_on=depends_on) as st:
            if not st.done:
                for k, v in arrays.items():
                    if isinstance(v, Mapping):  # nested: e.g. learned params
                        for kk, vv in v.items():
                            self.write_array(f"{name}/{k}", kk, np.asarray(vv))
                    else:
                        st.write_array(k, v, dims=(dims or {}).get(k))
                if attrs:
                    st.set_attrs(**serial.to_jsonable(dict(attrs)))
        return st.key

    def read_group(self, name: str) -> dict:
        """``{array: ndarray}`` (nested groups as dicts) plus ``"attrs"`` of ``name``, all
        from one complete version of its step (see :meth:`read_array`)."""
        return self._snapshot(name, lambda: self._read_group(name))

    def _read_group(self, name: str) -> dict:
        with wrap_errors(self.path, name):
            g = self.root[name.strip("/")]
            out: dict = {k: v[...] for k, v in g.arrays()}
            out.update({k: self._read_group(f"{name}/{k}") for k, _ in g.groups()})
            hidden = (L.STEP_ATTR, WRITING_ATTR)
            out["attrs"] = {k: v for k, v in g.attrs.asdict().items() if k not in hidden}
        return out

    # ------------------------------------------------------------------ xarray
    def open_datatree(self, **kw):
        """``xarray.open_datatree`` of the store (non-consolidated, always current)."""
        import xarray as xr

        kw.setdefault("consolidated", False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return xr.open_datatree(str(self.path), engine="zarr", **kw)

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r}, mode={self.mode!r})"
