"""4D-STEM stacks ``(scan_y, scan_x, k_y, k_x)`` from HDF5 or ``.npy``, streamed.

The scan is a raster: frame ``i`` is scan point ``(i // scan_x, i % scan_x)`` at
``(iy * step_y, ix * step_x)`` metres; positions are converted to object pixels with
:func:`storage.geometry.positions_from_metres`. Frames are read a few scan rows at a time
(``lazy=True``), so a stack larger than memory can be ingested.

The object pixel comes from one of (first found): ``pixel_size`` [m];
``distance`` (camera length) [m] and ``detector_pixel`` [m] (``lambda L / (N p)``);
``reciprocal_pixel`` [1/m per detector pixel] (``1 / (N dk)``); ``angle_per_pixel`` [rad]
(``lambda / (N alpha)``). The wavelength is ``wavelength`` [m] or the relativistic
electron wavelength of ``energy_ev`` [eV]. Options missing from the call are looked up
in the dataset's HDF5 attributes under the same names.
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

__all__ = ["read_stem4d", "find_4d_dataset"]

_GEOM = ("wavelength", "energy_ev", "pixel_size", "distance", "detector_pixel",
         "reciprocal_pixel", "angle_per_pixel", "step")  # fmt: skip


def find_4d_dataset(f: h5py.File) -> str | None:
    """Path of the largest 4-D dataset in ``f``."""
    found: list[tuple[int, str]] = []
    f.visititems(
        lambda n, o: found.append((o.size, n)) if isinstance(o, h5py.Dataset) and o.ndim == 4
        else None
    )  # fmt: skip
    return max(found)[1] if found else None


def read_stem4d(
    path: str | os.PathLike | np.ndarray,
    *,
    dataset: str | None = None,
    step=None,
    margin: float = DEFAULT_MARGIN,
    fftshift: bool = False,
    lazy: bool = False,
    **options,
) -> PtychoData:
    """Read a 4D-STEM stack as far-field ptychography data.

    Parameters
    ----------
    path : path-like (``.h5``/``.hdf5``/``.emd``/``.npy``) or ndarray
    dataset : str, optional
        HDF5 path of the 4-D data (default: the largest 4-D dataset).
    step : float or (float, float)
        Scan step in metres, ``(step_y, step_x)`` or one value for both (alias
        ``step_size``).
    fftshift : bool
        Shift corner-centred patterns to the centre (STEM patterns usually are centred).
    lazy : bool
        Keep frames on disk and read them in blocks of scan rows.
    **options
        Geometry (``energy_ev``, ``wavelength``, ``pixel_size``, ``distance``,
        ``detector_pixel``, ``reciprocal_pixel``, ``angle_per_pixel``) and
        :class:`PtychoData` overrides.
    """
    if "step_size" in options:  # alias used by flows' IngestParams
        step = options.pop("step_size") if step is None else step
    geom = {k: options.pop(k) for k in list(options) if k in _GEOM and k not in ("wavelength",)}
    if step is not None:
        geom["step"] = step
    wl_opt = options.get("wavelength")
    ov = C.split_overrides(options, "read_stem4d")
    src_path = None if isinstance(path, np.ndarray) else Path(path)
    fftshift = C.flag(fftshift, src_path or "array", "fftshift")
    if src_path is None:
        arr, attrs, closer = path, {}, None
    elif src_path.suffix.lower() == ".npy":
        from storage.readers.npy_members import open_npy

        arr = open_npy(src_path)  # scan rows read on demand, never the whole file mapped
        attrs, closer = {}, None
    else:
        with wrap_errors(src_path, None, "opening the HDF5 file"):
            f = h5py.File(src_path, "r")
            dataset = dataset or find_4d_dataset(f)
            if dataset is None or dataset not in f:
                f.close()
                raise DataError(src_path, dataset or "data", "no 4-D (scan_y, scan_x, ky, kx) "
                                "dataset found; pass dataset=")  # fmt: skip
            arr = f[dataset]
            attrs = {k: v for k, v in arr.attrs.items() if k in _GEOM}
        closer = f
    field = dataset or "data"
    if arr.ndim != 4:
        raise DataError(src_path, field, f"4D-STEM data must be (scan_y, scan_x, ky, kx); got "
                        f"shape {arr.shape}")  # fmt: skip
    if np.dtype(arr.dtype).kind not in "iuf":
        raise DataError(src_path, field, f"unsupported dtype {arr.dtype}")
    for k, v in attrs.items():
        geom.setdefault(k, np.asarray(v).tolist())
    if wl_opt is not None:
        geom["wavelength"] = wl_opt
    elif "wavelength" in attrs:
        geom["wavelength"] = float(np.asarray(attrs["wavelength"]))
    sy, sx, ky, kx = (int(s) for s in arr.shape)
    n = sy * sx
    wl = C.wavelength_from(geom, src_path, particle="electron")
    if wl is None:
        raise DataError(src_path, "energy_ev", "4D-STEM needs energy_ev= (eV) or wavelength= (m)")
    px = _pixel(geom, wl, max(ky, kx), src_path)
    if geom.get("step") is None:
        raise DataError(src_path, "step", "4D-STEM needs the scan step: step= (m)")
    st = np.broadcast_to(np.asarray(geom["step"], dtype=np.float64), (2,))
    iy, ix = np.divmod(np.arange(n), sx)
    positions = positions_from_metres(np.stack([iy * st[0], ix * st[1]], 1), px, margin)

    def get(a: int, b: int) -> np.ndarray:
        r0, r1 = a // sx, (b - 1) // sx + 1  # whole scan rows covering frames a..b
        with wrap_errors(src_path, field):
            slab = np.asarray(arr[r0:r1], dtype=np.float32).reshape(-1, ky, kx)
        out = slab[a - r0 * sx : b - r0 * sx]
        return np.fft.fftshift(out, axes=(-2, -1)) if fftshift else out

    if lazy:
        frames = LazyFrames(get, (n, ky, kx), arr.dtype)
    else:
        frames = get(0, n)
        if closer is not None:
            closer.close()
    meta = {"source": str(src_path), "reader": "stem4d", "scan_shape": [sy, sx]}
    d = PtychoData(
        modality="farfield", frames=frames, wavelength=wl, pixel_size=px,
        object_shape=object_shape_for(positions, (ky, kx), margin), positions_px=positions,
        distance=geom.get("distance"), detector_pixel=geom.get("detector_pixel"), meta=meta,
        params={"step_y": float(st[0]), "step_x": float(st[1])},
    )  # fmt: skip
    return C.finish(d, src_path, ov, lazy)


def _pixel(g: dict, wl: float, n: int, file) -> float:
    if g.get("pixel_size") is not None:
        return float(g["pixel_size"])
    if g.get("distance") and g.get("detector_pixel"):
        return wl * float(g["distance"]) / (n * float(g["detector_pixel"]))
    if g.get("reciprocal_pixel"):
        return 1.0 / (n * float(g["reciprocal_pixel"]))
    if g.get("angle_per_pixel"):
        return wl / (n * float(g["angle_per_pixel"]))
    raise DataError(file, "pixel_size", "4D-STEM needs pixel_size=, distance= and "
                    "detector_pixel=, reciprocal_pixel= or angle_per_pixel=")  # fmt: skip
