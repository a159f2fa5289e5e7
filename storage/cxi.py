"""CXI (HDF5) files: write a :class:`PtychoData`, read ptyflow and foreign CXI files.

Layout written by :func:`write_cxi` (units in each dataset's ``units`` attribute)::

    cxi_version = 160, number_of_entries = 1
    entry_1/data_1/data                        float32 (scan, det_y, det_x) counts, centred
    entry_1/instrument_1/detector_1/data       hard link to the frames above
    entry_1/instrument_1/detector_1/distance   m  (physical z2 for cone-beam near-field)
    entry_1/instrument_1/detector_1/{x,y}_pixel_size   m
    entry_1/instrument_1/detector_1/mask       uint32, 0 = good pixel (CXI convention)
    entry_1/instrument_1/source_1/wavelength   m
    entry_1/instrument_1/source_1/energy       J  (CXI convention, not eV)
    entry_1/sample_1/geometry_1/translation    m  (scan, (x, y, z)) = positions_px * pixel_size
    entry_1/ptyflow/                           exact ptyflow values (win over the above):
        attrs: modality, object_shape, pixel_size, wavelength, distance, detector_pixel, meta_json
        positions_px (scan, (y, x)) px, wavevectors (scan, (ky, kx)) cycles/m, probe complex64
        params/ (attrs: name -> number), meta/ (array-valued meta entries)
    entry_1/ground_truth/{object, probe, positions_px, surface, pupil, wavevectors, ...}

Reading a foreign CXI file (no ``entry_1/ptyflow``) derives the geometry:

* far-field (default): object pixel ``wavelength * distance / (N * detector_pixel)``;
* near-field (``modality="nearfield"`` or ``z1=`` given): cone-beam Fresnel scaling with the
  focus-to-sample distance ``z1`` (``math.inf`` for a parallel beam), giving the effective
  pixel ``detector_pixel / M`` and effective distance ``z2 / M``, ``M = (z1 + z2) / z1``.

CXI cannot say whether a file is near- or far-field, hence the explicit keyword.
Positions come from ``translation`` columns ``(x, y)`` converted to object pixels with
:func:`storage.geometry.positions_from_metres`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers bitshuffle/LZ4, Blosc, ... filters (Eiger files)
import numpy as np

from ptytasks.data import PtychoData
from ptytasks.lazy_frames import LazyFrames
from ptytasks.modalities import get as get_modality
from ptytasks.modalities import names as modality_names
from storage import serial
from storage.errors import DataError, wrap_errors
from storage.geometry import (
    DEFAULT_MARGIN,
    H_C_EV_M,
    H_C_J_M,
    object_shape_for,
    positions_from_metres,
)
from storage.readers._common import far_field_pixel, read_small
from storage.validate import check_frames, check_wavelength, validate_data

__all__ = ["write_cxi", "read_cxi"]

DET = "entry_1/instrument_1/detector_1"
SRC = "entry_1/instrument_1/source_1"
TRANSLATION = "entry_1/sample_1/geometry_1/translation"
PTY = "entry_1/ptyflow"
TRUTH = "entry_1/ground_truth"
_FIELDS = (
    "modality", "frames", "wavelength", "pixel_size", "object_shape", "positions_px",
    "wavevectors", "distance", "detector_pixel", "probe", "params", "ground_truth", "meta",
)  # fmt: skip


def _dset(g: h5py.Group, name: str, value, units: str | None = None, **kw) -> h5py.Dataset:
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        arr = arr.astype(np.complex64)
    ds = g.create_dataset(name, data=arr, **kw)
    if units:
        ds.attrs["units"] = units
    return ds


def write_cxi(path: str | os.PathLike, data: PtychoData) -> Path:
    """Write ``data`` as a CXI file, atomically (temporary file, then rename).

    Parameters
    ----------
    path : path-like
        Destination ``.cxi`` file; replaced if it exists.
    data : PtychoData
        Validated first; frames are written float32, chunked one frame per chunk.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    d = validate_data(data, path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            _write(f, d)
        os.replace(tmp, path)  # readers see the old file or the whole new one
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write(f: h5py.File, d: PtychoData) -> None:
    f["cxi_version"] = 160
    f["number_of_entries"] = 1
    n, ny, nx = d.frames.shape
    data_1 = f.require_group("entry_1/data_1")
    frames = data_1.create_dataset("data", shape=(n, ny, nx), dtype=np.float32, chunks=(1, ny, nx))
    frames.attrs["units"] = "counts"
    frames.attrs["axes"] = "scan:det_y:det_x"
    step = max(1, (64 * 2**20) // (ny * nx * 4))
    for s in range(0, n, step):  # block copy: works for LazyFrames too
        frames[s : s + step] = np.asarray(d.frames[s : s + step], dtype=np.float32)
    det = f.require_group(DET)
    det["data"] = frames  # hard link, as CXI readers look in either place
    z2 = d.params.get("z2", d.distance)
    if z2 is not None:
        _dset(det, "distance", float(z2), "m")
    if d.detector_pixel is not None:
        _dset(det, "x_pixel_size", float(d.detector_pixel), "m")
        _dset(det, "y_pixel_size", float(d.detector_pixel), "m")
    mask = d.meta.get("mask") if isinstance(d.meta, dict) else None
    if isinstance(mask, np.ndarray) and mask.shape == (ny, nx):
        _dset(det, "mask", (~mask.astype(bool)).astype(np.uint32))
    src = f.require_group(SRC)
    _dset(src, "wavelength", float(d.wavelength), "m")
    _dset(src, "energy", H_C_J_M / float(d.wavelength), "J")
    if d.positions_px is not None:
        p_m = np.asarray(d.positions_px, np.float64) * float(d.pixel_size)
        xyz = np.stack([p_m[:, 1], p_m[:, 0], np.zeros(n)], axis=1)
        _dset(f.require_group("entry_1/sample_1/geometry_1"), "translation", xyz, "m")
    pty = f.require_group(PTY)
    pty.attrs["modality"] = d.modality
    pty.attrs["object_shape"] = np.asarray(d.object_shape, np.int64)
    pty.attrs["pixel_size"] = float(d.pixel_size)
    pty.attrs["wavelength"] = float(d.wavelength)
    for key in ("distance", "detector_pixel"):
        v = getattr(d, key)
        if v is not None:
            pty.attrs[key] = float(v)
    pty.attrs["units"] = serial.dumps(
        {"pixel_size": "m", "wavelength": "m", "distance": "m", "detector_pixel": "m"}
    )
    if d.positions_px is not None:
        _dset(pty, "positions_px", np.asarray(d.positions_px, np.float64), "px")
    if d.wavevectors is not None:
        _dset(pty, "wavevectors", np.asarray(d.wavevectors, np.float64), "1/m")
    if d.probe is not None:
        _dset(pty, "probe", d.probe)
    params = pty.require_group("params")
    for k, v in d.params.items():
        params.attrs[k] = float(v)
    js, arrays = serial.split_meta(d.meta)
    pty.attrs["meta_json"] = serial.dumps(js)
    meta_g = pty.require_group("meta")
    for k, v in arrays.items():
        _dset(meta_g, k, v)
    if d.ground_truth:
        gt = f.require_group(TRUTH)
        for k, v in d.ground_truth.items():
            _dset(gt, k, v, {"positions_px": "px", "wavevectors": "1/m"}.get(k))


def _scalar(f: h5py.File, key: str) -> float | None:
    if key not in f:
        return None
    ds = f[key]
    if not isinstance(ds, h5py.Dataset) or ds.size == 0:
        raise DataError(f.filename, key, "must be a dataset holding one number")
    # the first element only: a scalar declared as a huge array is never read whole
    return float(np.asarray(ds[()] if ds.ndim == 0 else ds[(0,) * ds.ndim]))


def read_cxi(
    path: str | os.PathLike,
    *,
    z1: float | None = None,
    margin: float = DEFAULT_MARGIN,
    lazy: bool = False,
    **overrides,
) -> PtychoData:
    """Read a CXI file written by :func:`write_cxi` or by an instrument.

    Parameters
    ----------
    path : path-like
    z1 : float, optional
        Focus-to-sample distance in m for a cone-beam near-field file (``math.inf`` for a
        parallel beam). Giving it implies ``modality="nearfield"``.
    margin : float
        Object pixels left free around the scan when positions are derived from
        ``translation`` (foreign files only).
    lazy : bool
        Keep frames on disk (:class:`~ptytasks.lazy_frames.LazyFrames`) for streaming.
    **overrides
        Any :class:`PtychoData` field (``modality``, ``wavelength``, ``pixel_size``,
        ``distance``, ``detector_pixel``, ``object_shape``, ...). Physical overrides are
        applied before the geometry is derived; ``params``/``meta`` are merged.

    Raises
    ------
    DataError
        Unreadable/truncated file, missing or implausible fields, near-field without ``z1``.
    """
    path = Path(path)
    unknown = set(overrides) - set(_FIELDS)
    if unknown:
        raise TypeError(f"read_cxi got unknown keywords {sorted(unknown)}")
    if not path.is_file():
        raise DataError(path, None, "file does not exist")
    with wrap_errors(path, None, "opening the CXI/HDF5 file"):
        f = h5py.File(path, "r")
    try:
        with wrap_errors(path, None):
            d = _read(f, path, z1, margin, lazy, overrides)
        return validate_data(d, path, check_values=not lazy)
    except BaseException:
        # Close now: a file left to the cyclic garbage collector (the traceback holds it)
        # may be finalised on another thread (zarr's event loop) and deadlock HDF5's lock.
        f.close()
        raise
    finally:
        if not lazy:
            f.close()


def _frames(f: h5py.File, path: Path, lazy: bool):
    for key in ("entry_1/data_1/data", f"{DET}/data"):
        if key in f and isinstance(f[key], h5py.Dataset):
            ds = f[key]
            break
    else:
        raise DataError(path, "entry_1/data_1/data", "no frames (nor detector_1/data) in file")
    check_frames(ds, path, key, values=False)
    if lazy:
        return LazyFrames(lambda a, b: np.asarray(ds[a:b], np.float32), ds.shape, ds.dtype)
    with wrap_errors(path, key):
        frames = np.asarray(ds[()], dtype=np.float32)
    check_frames(frames, path, key)
    return frames


def _read(f, path, z1, margin, lazy, ov) -> PtychoData:
    frames = _frames(f, path, lazy)
    n, ny, nx = frames.shape
    pty = f[PTY] if PTY in f else None
    params = {}
    meta: dict = {"source": str(path), "reader": "cxi"}
    if pty is not None:
        a = pty.attrs
        params = {k: float(v) for k, v in pty["params"].attrs.items()} if "params" in pty else {}
        stored = serial.loads(a["meta_json"]) if "meta_json" in a else {}
        # this file is the source now (its fingerprint, provenance); where it came from is
        # kept beside
        origin = stored.pop("source", None)
        stored.pop("reader", None)
        meta.update(stored)
        if origin is not None and origin != str(path):
            meta["origin_source"] = origin
        if "meta" in pty:
            meta.update({k: read_small(v, path, f"{PTY}/meta/{k}") for k, v in pty["meta"].items()})
    # Raw physical metadata (file values, then user overrides)
    wavelength, wl_field = ov.get("wavelength"), "wavelength"
    if wavelength is None:
        wavelength, wl_field = _scalar(f, f"{SRC}/wavelength"), f"{SRC}/wavelength"
    if wavelength is None and f"{SRC}/energy" in f:
        e, wl_field = _scalar(f, f"{SRC}/energy"), f"{SRC}/energy"
        if not e > 0:
            raise DataError(path, wl_field, f"must be a positive energy; got {e:g}")
        # CXI stores joules; a value above 1e-6 can only be electronvolts
        wavelength = H_C_EV_M / e if e > 1e-6 else H_C_J_M / e
    if wavelength is None:
        raise DataError(path, f"{SRC}/wavelength", "no wavelength or energy; pass wavelength=")
    # here, naming the file's field, before it scales the positions (a 0 gave inf corners)
    wavelength = check_wavelength(wavelength, path, wl_field)
    det_px = ov.get("detector_pixel", _scalar(f, f"{DET}/x_pixel_size"))
    z2 = _scalar(f, f"{DET}/distance")
    if f"{DET}/mask" in f:
        shape = getattr(f[f"{DET}/mask"], "shape", None)
        if shape != (ny, nx):  # a mask for another detector: refused, not silently dropped
            raise DataError(path, f"{DET}/mask", f"shape {shape} is not the frames' "
                            f"{(ny, nx)}")  # fmt: skip
        m = read_small(f[f"{DET}/mask"], path, f"{DET}/mask")  # shape checked before reading
        meta["mask"] = m == 0  # CXI: nonzero marks a bad pixel; ours: True = usable
    if pty is not None:
        a = pty.attrs
        small = lambda k: read_small(pty[k], path, f"{PTY}/{k}") if k in pty else None
        d = PtychoData(
            modality=str(a["modality"]),
            frames=frames,
            wavelength=float(a.get("wavelength", wavelength)),
            pixel_size=float(a["pixel_size"]),
            object_shape=tuple(int(v) for v in a["object_shape"]),
            positions_px=small("positions_px"),
            wavevectors=small("wavevectors"),
            distance=float(a["distance"]) if "distance" in a else None,
            detector_pixel=float(a["detector_pixel"]) if "detector_pixel" in a else None,
            probe=small("probe"),
            params=params,
            meta=meta,
        )
    else:
        d = _foreign(f, path, frames, wavelength, det_px, z2, z1, margin, ov, meta)
    if TRUTH in f:
        # size-checked before reading: ground truth is read whole even when lazy
        d.ground_truth = {k: read_small(v, path, f"{TRUTH}/{k}") for k, v in f[TRUTH].items()}
    for k, v in ov.items():
        if k in ("params", "meta"):
            getattr(d, k).update(v)
        else:
            setattr(d, k, v)
    return d


def _foreign(f, path, frames, wavelength, det_px, z2, z1, margin, ov, meta) -> PtychoData:
    n, ny, nx = frames.shape
    modality = ov.get("modality") or ("nearfield" if z1 is not None else "farfield")
    meta["modality_source"] = "argument" if ("modality" in ov or z1 is not None) else "default"
    distance = ov.get("distance", z2)
    params: dict[str, float] = {}
    pixel = ov.get("pixel_size")
    if modality not in modality_names():
        raise DataError(path, "modality", f"{modality!r} is not one of {modality_names()}")
    mod = get_modality(modality)
    if mod.fresnel_scaled and "distance" not in ov:
        if z1 is None:
            raise DataError(
                path,
                "z1",
                "near-field CXI file without the focus-to-sample distance: pass "
                "z1=<metres> (e.g. read_cxi(path, z1=3.65e-3)), or z1=math.inf for a parallel "
                "beam",
            )
        if z2 is None or det_px is None:
            raise DataError(path, f"{DET}/distance", "near-field needs distance and x_pixel_size")
        if math.isinf(z1):
            sc = {"magnification": 1.0, "effective_pixel": det_px, "effective_distance": z2}
        else:
            # imported here: propagators pulls in torch, which ingest otherwise never needs
            from ptytasks.physics.propagators import fresnel_scaling

            try:
                sc = fresnel_scaling(float(z1), float(z2), float(det_px))
            except ValueError as exc:
                raise DataError(path, "z1", str(exc)) from exc
            params = {"z1": float(z1), "z2": float(z2), "magnification": sc["magnification"]}
        distance = sc["effective_distance"]
        pixel = pixel if pixel is not None else sc["effective_pixel"]
    elif pixel is None and mod.far_field_detector:
        pixel = far_field_pixel(wavelength, distance, det_px, (ny, nx), path, mod,
                                f"{DET}/data")
        if pixel is None:
            raise DataError(
                path,
                f"{DET}/distance",
                "far-field pixel size needs detector distance and "
                "x_pixel_size; pass pixel_size= (m) or the missing values",
            )
    if pixel is None:
        raise DataError(path, "pixel_size", f"cannot derive it for {modality}; pass pixel_size=")
    positions = None
    if TRANSLATION in f:
        shape = getattr(f[TRANSLATION], "shape", None)
        if shape is None or len(shape) != 2 or shape[0] != n or not 2 <= shape[1] <= 3:
            raise DataError(
                path, TRANSLATION, f"shape {shape} does not match {n} frames: need ({n}, 3)"
            )  # checked before reading: a declared-huge array is never allocated
        t = np.asarray(read_small(f[TRANSLATION], path, TRANSLATION), dtype=np.float64)
        if not np.isfinite(t).all():
            raise DataError(path, TRANSLATION, "contains NaN or infinite values")
        positions = positions_from_metres(t[:, [1, 0]], pixel, margin)  # (x, y) -> (y, x)
    elif mod.scanning:
        raise DataError(path, TRANSLATION, "no scan positions in the file")
    oshape = ov.get("object_shape")
    if oshape is None:
        oshape = (
            object_shape_for(positions, (ny, nx), margin) if positions is not None else (ny, nx)
        )
    return PtychoData(
        modality=modality,
        frames=frames,
        wavelength=float(wavelength),
        pixel_size=float(pixel),
        object_shape=tuple(oshape),
        positions_px=positions,
        distance=None if distance is None else float(distance),
        detector_pixel=det_px,
        params=params,
        meta=meta,
    )
