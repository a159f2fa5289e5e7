"""A generic HDF5 reader driven by a small mapping of dataset paths.

Example::

    read_hdf5("scan.h5", mapping={
        "frames": "/entry/data/frames",            # (scan, y, x); required
        "frames_axes": "syx",                       # or "yxs" (frames last, e.g. MATLAB)
        "positions": "/entry/scan/xy",              # (scan, 2)
        "positions_order": "xy",                    # column order: "yx" (default) or "xy"
        "positions_units": "m",                     # "m" (default) or "px"
        "wavelength": "/entry/source@wavelength",   # dataset, dataset@attribute or number
        "energy_ev": 8000.0,
        "pixel_size": 20e-9,
        "distance": "/entry/detector/distance",
        "detector_pixel": "/entry/detector/x_pixel_size",
        "probe": "/entry/probe",
        "mask": "/entry/detector/mask",             # nonzero = usable unless mask_bad=True
        "modality": "farfield",
        "fftshift": False,
    })

Values are read with their units as given (SI). A 4-D ``frames`` dataset is read as
4D-STEM (see :mod:`storage.readers.stem4d`; its scan ``step`` (m) as another entry, and no
``positions``, ``frames_axes``, ``wavevectors`` or ``probe``).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers compression filters (bitshuffle/LZ4, Blosc)
import numpy as np

from ptytasks.data import PtychoData
from ptytasks.lazy_frames import LazyFrames
from storage.errors import DataError, wrap_errors
from storage.geometry import DEFAULT_MARGIN, object_shape_for, positions_from_metres
from storage.readers import _common as C
from storage.validate import check_positions_extent

__all__ = ["read_hdf5"]

_KNOWN = {"frames", "frames_axes", "positions", "positions_order", "positions_units",
          "wavelength", "energy_ev", "pixel_size", "distance", "detector_pixel", "probe",
          "mask", "mask_bad", "modality", "fftshift", "wavevectors", "step"}  # fmt: skip


#: Entries naming data in the file (the others are plain options).
_VALUES = {"positions", "wavelength", "energy_ev", "pixel_size", "distance", "detector_pixel",
           "probe", "mask", "wavevectors"}  # fmt: skip


def _value(f: h5py.File, spec, path, field):
    """A number/string literal, ``dataset`` or ``dataset@attribute`` from ``f``."""
    if not isinstance(spec, str):
        return spec
    dset, _, attr = spec.partition("@")
    if dset not in f:
        raise DataError(path, spec, f"mapping entry {field!r} names a path not in the file")
    with wrap_errors(path, spec):
        obj = f[dset]
        v = obj.attrs[attr] if attr else C.read_small(obj, path, spec)
    return np.asarray(v)


def _num(v, path, field) -> float | None:
    if v is None:
        return None
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "iuf":
        raise DataError(path, field, f"must be one number, got {a.shape} {a.dtype}")
    return float(a.reshape(()))


def read_hdf5(
    path: str | os.PathLike,
    mapping: dict,
    *,
    margin: float = DEFAULT_MARGIN,
    lazy: bool = False,
    **options,
) -> PtychoData:
    """Read ``path`` using ``mapping`` (see module docstring)."""
    path = Path(path)
    unknown = set(mapping) - _KNOWN
    if unknown:
        raise TypeError(f"read_hdf5 mapping has unknown entries {sorted(unknown)}")
    if "frames" not in mapping:
        raise TypeError("read_hdf5 mapping needs 'frames'")
    ov = C.split_overrides(dict(options), "read_hdf5")
    with wrap_errors(path, None, "opening the HDF5 file"):
        f = h5py.File(path, "r")
    try:
        return _read_open(f, path, mapping, margin, lazy, options, ov)
    except BaseException:
        f.close()  # now, not by the garbage collector on some other thread
        raise


def _read_open(f, path, mapping, margin, lazy, options, ov) -> PtychoData:
    """The body of :func:`read_hdf5` once ``f`` is open (closed by the caller on error)."""
    fkey = mapping["frames"]
    if fkey not in f or not isinstance(f[fkey], h5py.Dataset):
        f.close()
        raise DataError(path, fkey, "frames dataset not found")
    ds = f[fkey]
    shift = C.flag(mapping.get("fftshift", False), path, "mapping.fftshift")
    mask_bad = C.flag(mapping.get("mask_bad", False), path, "mapping.mask_bad")
    order = mapping.get("positions_order", "yx")
    if order not in ("yx", "xy"):
        raise DataError(path, "mapping.positions_order", f"must be 'yx' or 'xy'; got {order!r}")
    if ds.ndim == 4:
        return _read_4d(f, path, mapping, margin, lazy, options, shift, mask_bad)
    if "step" in mapping:
        raise DataError(path, "mapping.step", "is for a 4-D (4D-STEM) frames dataset; give "
                        "a 3-D stack's scan as positions")  # fmt: skip
    axes = mapping.get("frames_axes", "syx")
    if ds.ndim != 3 or axes not in ("syx", "yxs"):
        f.close()
        raise DataError(path, fkey, f"frames must be 3-D with frames_axes 'syx' or 'yxs'; got "
                        f"shape {ds.shape}, axes {axes!r}")  # fmt: skip
    if ds.dtype.kind not in "iuf":
        f.close()
        raise DataError(path, fkey, f"unsupported frame dtype {ds.dtype}")
    n, ny, nx = ds.shape if axes == "syx" else (ds.shape[2], ds.shape[0], ds.shape[1])

    def get(a: int, b: int) -> np.ndarray:
        with wrap_errors(path, fkey):
            blk = np.asarray(ds[a:b] if axes == "syx" else np.moveaxis(ds[:, :, a:b], -1, 0),
                             np.float32)  # fmt: skip
        return np.fft.fftshift(blk, axes=(-2, -1)) if shift else blk

    frames = LazyFrames(get, (n, ny, nx), ds.dtype) if lazy else get(0, n)
    val = {k: _value(f, mapping[k], path, k) for k in mapping if k in _VALUES}
    wl = ov.pop("wavelength", None) or C.wavelength_from(
        {"wavelength": _num(val.get("wavelength"), path, "wavelength"),
         "energy_ev": _num(val.get("energy_ev"), path, "energy_ev")}, path)  # fmt: skip
    if wl is None:
        raise DataError(path, "wavelength", "mapping needs wavelength or energy_ev")
    dist = _num(val.get("distance"), path, "distance")
    det = _num(val.get("detector_pixel"), path, "detector_pixel")
    px = ov.pop("pixel_size", None) or _num(val.get("pixel_size"), path, "pixel_size")
    if px is None and dist and det:
        px = C.far_field_pixel(wl, dist, det, (ny, nx), path)
    if px is None:
        raise DataError(path, "pixel_size", "mapping needs pixel_size or distance+detector_pixel")
    positions = None
    if "positions" in val:
        pos = np.asarray(val["positions"], dtype=np.float64)
        if pos.shape != (n, 2):
            raise DataError(path, mapping["positions"], f"shape {pos.shape} does not match {n} "
                            "frames: expected (n, 2)")  # fmt: skip
        pos = pos[:, ::-1] if order == "xy" else pos
        units = C.check_positions_units(mapping.get("positions_units", "m"), path)
        positions = positions_from_metres(pos, px if units == "m" else 1.0, margin)
        check_positions_extent(positions, (ny, nx), path, mapping["positions"], units, px)
    meta = {"source": str(path), "reader": "hdf5"}
    if "mask" in val:
        meta["mask"] = _mask(val["mask"], mask_bad, shift)
    wv = val.get("wavevectors")
    d = PtychoData(
        modality=str(mapping.get("modality", "farfield")), frames=frames, wavelength=wl,
        pixel_size=px, positions_px=positions, distance=dist, detector_pixel=det,
        object_shape=object_shape_for(positions, (ny, nx), margin) if positions is not None
        else (ny, nx),
        wavevectors=None if wv is None else np.asarray(wv, np.float64),
        probe=None if val.get("probe") is None else np.asarray(val["probe"]),
        meta=meta,
    )  # fmt: skip
    if not lazy:
        f.close()
    return C.finish(d, path, ov, lazy)


def _mask(value, bad: bool, shift: bool) -> np.ndarray:
    """The usable-pixel mask (True = use) in the frames' pixel order: shifted with them."""
    mk = np.asarray(value).astype(bool)
    mk = ~mk if bad else mk
    return np.fft.fftshift(mk, axes=(-2, -1)) if shift else mk


def _read_4d(f, path, mapping, margin, lazy, options, shift, mask_bad) -> PtychoData:
    """A 4-D (scan y, scan x, ky, kx) frames dataset: read as 4D-STEM, the mapping's
    geometry (numbers or paths in the file), ``fftshift`` and ``mask`` carried over."""
    from storage.readers.stem4d import read_stem4d

    extra = sorted({"positions", "frames_axes", "wavevectors", "probe"} & set(mapping))
    if extra:
        f.close()
        raise DataError(path, f"mapping.{extra[0]}", "not read for a 4-D frames dataset (4D-STEM:"
                        " the scan is the grid of its first two axes); remove it")
    keys = ("energy_ev", "wavelength", "pixel_size", "distance", "detector_pixel", "step")
    try:
        geo = {k: _num(_value(f, mapping[k], path, k), path, k) for k in keys if k in mapping}
        mask = _value(f, mapping["mask"], path, "mask") if "mask" in mapping else None
    finally:
        f.close()
    d = read_stem4d(path, dataset=mapping["frames"], margin=margin, lazy=lazy, fftshift=shift,
                    **{k: v for k, v in geo.items() if v is not None}, **options)
    if mask is not None:
        mk = _mask(mask, mask_bad, shift)
        if mk.shape != d.frame_shape:
            raise DataError(path, mapping["mask"], f"mask shape {mk.shape} != frame shape "
                            f"{d.frame_shape}")  # fmt: skip
        d.meta["mask"] = mk
    return d

