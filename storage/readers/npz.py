"""NumPy ``.npy`` / ``.npz`` (optionally ``.bz2``-compressed) readers.

Recognised ``.npz`` keys (all optional but the frames; ``keys=`` renames them):

==============  ===========================================================================
frames          ``data`` | ``frames`` | ``diffraction`` | ``intensities``: (..., scan, y, x);
                leading length-1 axes are dropped (the tike layout is (1, scan, y, x))
positions       ``scan`` | ``positions`` | ``positions_px`` (pixels, (y, x)) or
                ``positions_m`` (metres)
probe           ``probe``: (y, x) or modes (..., modes, y, x) complex; all modes are kept
scalars         ``wavelength`` [m], ``energy_ev`` [eV], ``pixel_size`` [m], ``distance`` [m],
                ``detector_pixel`` [m]
==============  ===========================================================================

Frames whose brightest region lies at the corners (NumPy ``fft`` order, as in the tike
Siemens-star file) are ``fftshift``-ed to the centred convention (``fftshift=None``
detects it; pass ``True``/``False`` to force). Positions are shifted so that their minimum
is ``margin`` and ``object_shape`` is computed to hold every probe window plus ``margin``.
Files without geometry get nominal wavelength and pixel size, listed in ``meta["nominal"]``.
Nothing is unpickled (``allow_pickle=False``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ptytasks.data import PtychoData
from ptytasks.lazy_frames import LazyFrames
from storage.errors import DataError, wrap_errors
from storage.geometry import DEFAULT_MARGIN, object_shape_for, positions_from_metres
from storage.readers import _common as C
from storage.readers.npy_members import NpyArray, open_npy, open_npz
from storage.readers.sources import positions_sidecars
from storage.validate import check_positions_extent, check_probe

__all__ = ["read_npz", "read_npy", "load_npz"]

_FRAME_KEYS = ("data", "frames", "diffraction", "intensities")
_POS_KEYS = (("scan", "px"), ("positions", "px"), ("positions_px", "px"), ("positions_m", "m"))
_SCALARS = ("wavelength", "energy_ev", "pixel_size", "distance", "detector_pixel")


def load_npz(path: Path, lazy: bool = False) -> dict[str, np.ndarray | NpyArray]:
    """All arrays of an ``.npz`` (or ``.npz.bz2``) file, never unpickling.

    A ``.bz2`` archive is decompressed as a stream to a temporary file, never in memory
    (:func:`storage.readers.npy_members.open_npz`). ``lazy=True`` leaves the arrays of
    uncompressed members on disk (:class:`~storage.readers.npy_members.NpyArray`, read by
    row range); otherwise every array is read into memory once.
    """
    path = Path(path)
    arrays = open_npz(path)
    if lazy:
        return arrays
    with wrap_errors(path, None, "reading the npz archive"):
        return {k: np.asarray(v) for k, v in arrays.items()}


def _squeeze_leading(a: np.ndarray, ndim: int) -> np.ndarray:
    if isinstance(a, NpyArray):
        return a.squeeze_leading(ndim)  # nothing read
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    return a


def read_npz(
    path: str | os.PathLike,
    *,
    keys: dict[str, str] | None = None,
    fftshift: bool | None = None,
    margin: float = DEFAULT_MARGIN,
    lazy: bool = False,
    **options,
) -> PtychoData:
    """Read a far-field dataset from ``.npz`` / ``.npz.bz2`` (see module docstring).

    Parameters
    ----------
    keys : dict, optional
        ``{"frames": name, "positions": name, "probe": name}`` for other key names.
    fftshift : bool or None
        Shift corner-centred frames to the centre; ``None`` detects.
    margin : float
        Object pixels around the scan.
    lazy : bool
        Keep the frames on disk, read in blocks (archive members stored uncompressed, as
        ``np.savez`` writes them; a deflated member is read whole).
    **options
        :class:`PtychoData` overrides (``wavelength=``, ``pixel_size=``, ...).
    """
    path = Path(path)
    ov = C.split_overrides(options, "read_npz")
    arrays = load_npz(path, lazy=lazy)
    return _build(path, arrays, keys or {}, fftshift, margin, ov, lazy)


def read_npy(
    path: str | os.PathLike,
    *,
    positions=None,
    positions_units: str | None = None,
    fftshift: bool | None = False,
    margin: float = DEFAULT_MARGIN,
    lazy: bool = False,
    **options,
) -> PtychoData:
    """Read a ``(scan, y, x)`` frame stack from ``.npy`` (read in blocks when ``lazy``).

    Positions come from ``positions=`` (array, ``.npy`` or ``.csv``) or a sidecar file
    ``<stem>_positions.csv`` / ``.npy``. 4-D arrays are 4D-STEM: use
    :func:`storage.readers.stem4d.read_stem4d` (``read_any`` dispatches automatically).
    """
    path = Path(path)
    ov = C.split_overrides(options, "read_npy")
    if lazy:  # rows read on demand: a streamed copy never maps the whole file
        arr = open_npy(path)
    else:
        with wrap_errors(path, None, "reading the npy file"):
            arr = np.load(path, allow_pickle=False)
    units = C.check_positions_units(positions_units, path)
    if positions is None:  # the sidecar storage.readers.sources.source_files lists
        positions = next(iter(positions_sidecars(path, "npy")), None)
    arrays = {"data": arr}
    keys = {}
    if positions is not None:
        pos, units = C.load_positions(positions, arr.shape[0] if arr.ndim else 0, path, units)
        arrays["positions_m" if units == "m" else "positions"] = pos
        if isinstance(positions, (str, os.PathLike)):  # errors name the positions file
            keys["positions_field"] = os.fspath(positions)
    return _build(path, arrays, keys, fftshift, margin, ov, lazy)


def _pick(arrays: dict, keys: dict, role: str, candidates) -> tuple[str | None, object]:
    if role in keys:
        if keys[role] not in arrays:
            raise DataError(None, keys[role], f"key not in file (has {sorted(arrays)})")
        return keys[role], arrays[keys[role]]
    for k in candidates:
        if k in arrays:
            return k, arrays[k]
    return None, None


def _build(path, arrays, keys, fftshift, margin, ov, lazy) -> PtychoData:
    fkey, frames = _pick(arrays, keys, "frames", _FRAME_KEYS)
    if frames is None:
        raise DataError(path, "frames", f"no frames: expected one of {_FRAME_KEYS}, found "
                        f"{sorted(arrays)}")  # fmt: skip
    frames = _squeeze_leading(frames, 3)
    if frames.ndim != 3:
        raise DataError(path, fkey, f"frames must be (scan, y, x); got shape {frames.shape}")
    if frames.dtype.kind not in "iuf":
        raise DataError(path, fkey, f"frames have unsupported dtype {frames.dtype}")
    n, ny, nx = frames.shape
    fftshift = C.flag(fftshift, path, "fftshift", auto=True)
    shift = bool(C.is_corner_centred(frames) if fftshift is None else fftshift)
    if lazy and isinstance(frames, (np.memmap, NpyArray)):
        src = frames
        get = lambda a, b: _maybe_shift(np.asarray(src[a:b], np.float32), shift)
        frames_out = LazyFrames(get, frames.shape, frames.dtype)
    else:
        frames_out = _maybe_shift(np.asarray(frames, np.float32), shift)
    scal = {}
    for k in _SCALARS:
        if k in arrays:
            v = np.asarray(arrays[k])
            if v.size != 1 or v.dtype.kind not in "iuf":
                raise DataError(path, k, f"must be one number, got shape {v.shape} {v.dtype}")
            scal[k] = float(v.reshape(()))
    meta = {"source": str(path), "reader": "npz", "fftshifted": shift}
    nominal = []
    wl = ov.get("wavelength") or C.wavelength_from(scal, path)
    if wl is None:
        wl, nominal = C.NOMINAL["wavelength"], nominal + ["wavelength"]
    px = ov.get("pixel_size") or scal.get("pixel_size")
    if px is None and scal.get("distance") and scal.get("detector_pixel"):
        px = C.far_field_pixel(wl, scal["distance"], scal["detector_pixel"], (ny, nx), path)
    if px is None:
        px, nominal = C.NOMINAL["pixel_size"], nominal + ["pixel_size"]
    if nominal:
        meta["nominal"] = nominal
    pkey, pos = _pick(arrays, keys, "positions", [k for k, _ in _POS_KEYS])
    positions = None
    if pos is not None:
        pos = _squeeze_leading(np.asarray(pos), 2)
        if pos.ndim != 2 or pos.shape != (n, 2):
            raise DataError(path, pkey, f"shape {pos.shape} does not match {n} frames: "
                            f"expected ({n}, 2)")  # fmt: skip
        if pos.dtype.kind not in "iuf" or not np.isfinite(pos).all():
            raise DataError(path, pkey, "positions must be finite numbers")
        units = C.check_positions_units(keys.get("positions_units"), path)
        in_m = dict(_POS_KEYS).get(pkey) == "m" or units == "m"
        if in_m and "pixel_size" in nominal:  # metres over a placeholder pixel: any overlap
            raise DataError(path, "pixel_size", f"positions ({pkey}) are in metres but the "
                            "file gives no object pixel size: pass pixel_size= (m), or "
                            "distance= and detector_pixel= (m)")  # fmt: skip
        positions = positions_from_metres(pos, px if in_m else 1.0, margin)
        check_positions_extent(positions, (ny, nx), path, keys.get("positions_field", pkey),
                               "m" if in_m else "px", px)  # fmt: skip
    pkey_probe, probe = _pick(arrays, keys, "probe", ("probe",))
    if probe is not None:
        probe = check_probe(probe, path, pkey_probe)
    oshape = object_shape_for(positions, (ny, nx), margin) if positions is not None else (ny, nx)
    d = PtychoData(
        modality="farfield", frames=frames_out, wavelength=float(wl), pixel_size=float(px),
        object_shape=oshape, positions_px=positions, distance=scal.get("distance"),
        detector_pixel=scal.get("detector_pixel"), probe=probe, meta=meta,
    )  # fmt: skip
    return C.finish(d, path, ov, lazy)


def _maybe_shift(block: np.ndarray, shift: bool) -> np.ndarray:
    return np.fft.fftshift(block, axes=(-2, -1)) if shift else block
