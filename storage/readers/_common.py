"""Helpers shared by the readers: overrides, positions files, centring, physics."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ptytasks.data import PtychoData
from storage.errors import DataError, wrap_errors
from storage.geometry import energy_ev_to_wavelength
from storage.validate import POSITION_UNITS, validate_data

FIELDS = frozenset(
    ("modality", "wavelength", "pixel_size", "object_shape", "positions_px", "wavevectors",
     "distance", "detector_pixel", "probe", "params", "ground_truth", "meta")
)  # fmt: skip
#: Most bytes an auxiliary dataset (mask, probe, positions, metadata arrays, ground truth)
#: may declare: such arrays are read whole, so a small file declaring a huge one (HDF5
#: stores unwritten chunks as nothing) would otherwise allocate its declared size.
AUX_LIMIT_BYTES = 256 * 2**20
#: Placeholders for files that store no geometry (far-field engines work in pixels);
#: ``meta["nominal"]`` lists which fields carry them.
NOMINAL = {"wavelength": 1e-10, "pixel_size": 1e-8}


def read_small(ds, file, field: str, limit: int | None = None) -> np.ndarray:
    """Read a whole auxiliary HDF5 dataset after checking its declared size.

    Parameters
    ----------
    ds : h5py.Dataset (or anything with ``shape``, ``dtype`` and ``[()]``)
    file, field : named in the error
    limit : int, optional
        Most bytes allowed (default :data:`AUX_LIMIT_BYTES`).

    Raises
    ------
    DataError
        The declared size exceeds ``limit`` (nothing is read), or reading fails.
    """
    limit = AUX_LIMIT_BYTES if limit is None else int(limit)
    shape = tuple(int(v) for v in getattr(ds, "shape", None) or ())
    nbytes = int(np.prod(shape, dtype=np.float64)) * np.dtype(ds.dtype).itemsize
    if nbytes > limit:
        raise DataError(file, field, f"declares shape {shape} {np.dtype(ds.dtype)} "
                        f"({nbytes / 2**20:.0f} MiB), more than the {limit / 2**20:.0f} MiB an "
                        "auxiliary dataset may hold (storage.readers._common.AUX_LIMIT_BYTES); "
                        "refusing to read it")  # fmt: skip
    with wrap_errors(file, field):
        return np.asarray(ds[()])


def split_overrides(options: dict, reader: str) -> dict:
    """Pop the :class:`PtychoData` field overrides out of ``options``; reject unknowns."""
    ov = {k: options.pop(k) for k in list(options) if k in FIELDS}
    if options:
        raise TypeError(f"{reader} got unknown keywords {sorted(options)}")
    return ov


def apply_overrides(d: PtychoData, ov: dict) -> PtychoData:
    for k, v in ov.items():
        if k in ("params", "meta"):
            getattr(d, k).update(v)
        else:
            setattr(d, k, v)
            if isinstance(d.meta.get("nominal"), list) and k in d.meta["nominal"]:
                d.meta["nominal"].remove(k)
    return d


def finish(d: PtychoData, path, ov: dict, lazy: bool) -> PtychoData:
    """Apply overrides, then validate (values in full unless frames are lazy)."""
    return validate_data(apply_overrides(d, ov), path, check_values=not lazy)


def electron_wavelength(energy_ev: float) -> float:
    """Relativistic electron wavelength (m) at accelerating voltage ``energy_ev`` (eV)."""
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    ee = float(energy_ev) * e
    return h / math.sqrt(2 * m0 * ee * (1 + ee / (2 * m0 * c * c)))


def flag(value, file, name: str, auto: bool = False) -> bool | None:
    """A yes/no reader option: a bool (0 / 1 too); with ``auto`` also ``None`` or ``"auto"``
    (returned as ``None``: decide from the data). Anything else is refused, naming it (a
    string was taken as true: ``fftshift=auto`` scrambled every frame)."""
    if auto and (value is None or value == "auto"):
        return None
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    choices = "true, false or auto" if auto else "true or false"
    raise DataError(file, name, f"option {name} must be {choices}; got {value!r}")


def wavelength_from(options: dict, file, particle: str = "photon") -> float | None:
    """``wavelength`` (m) or ``energy_ev`` (eV) from reader options, or ``None``."""
    if options.get("wavelength") is not None:
        w = options["wavelength"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
            raise DataError(file, "wavelength", f"must be a positive number of metres, got {w!r}")
        return float(w)
    e = options.get("energy_ev")
    if e is None:
        return None
    if not (isinstance(e, (int, float)) and e > 0):
        raise DataError(file, "energy_ev", f"must be a positive number of eV, got {e!r}")
    return electron_wavelength(e) if particle == "electron" else energy_ev_to_wavelength(e)


def is_corner_centred(frames, sample: int = 64) -> bool:
    """True when the mean frame holds more counts around its corners than its centre.

    Far-field patterns concentrate their counts near zero frequency: at the array centre
    when centred, at pixel ``(0, 0)`` and its wrapped neighbours in NumPy ``fft`` order.
    The disks of radius ``N/4`` around both are compared (robust to hot pixels).
    """
    n = frames.shape[0]
    idx = np.linspace(0, n - 1, min(n, sample)).astype(int)
    m = np.mean([np.asarray(frames[int(i)], np.float64) for i in idx], axis=0)
    ny, nx = m.shape
    yy, xx = np.ogrid[:ny, :nx]
    disk = ((yy - ny // 2) / ny) ** 2 + ((xx - nx // 2) / nx) ** 2 < 1 / 16
    centre = float(m[disk].sum())
    corners = float(np.fft.fftshift(m)[disk].sum())
    return corners > centre


def check_positions_units(units, file, field: str = "positions_units") -> str | None:
    """``units`` when ``None`` or one of :data:`~storage.validate.POSITION_UNITS`.

    Raises
    ------
    DataError
        Any other value ("um", "nm", "metres"): it would otherwise be taken for pixels.
    """
    if units is None or (isinstance(units, str) and units in POSITION_UNITS):
        return units
    raise DataError(file, field, f"unknown positions unit {units!r}: use 'px' (object pixels) "
                    "or 'm' (metres; convert micrometres or nanometres to metres)")  # fmt: skip


def load_positions(spec, n: int, file, units: str | None = None):
    """Positions ``(n, 2)`` as ``(y, x)`` from an array, ``.npy`` or ``.csv`` path.

    CSV: a header naming ``y, x`` (pixels) or ``y_m, x_m`` (metres) columns in any order,
    or two unnamed columns ``y, x``. Returns ``(positions, units)`` with units
    ``"px"`` or ``"m"``; ``units`` other than those (or ``None``) are refused.
    """
    units = check_positions_units(units, file)
    field = "positions"
    if isinstance(spec, (str, os.PathLike)):
        p = Path(spec)
        field = os.fspath(p)
        with wrap_errors(p, None, "reading positions"):
            if p.suffix.lower() == ".npy":
                arr = np.load(p, allow_pickle=False)
            else:
                arr, units = _read_csv(p, units)
    else:
        arr = np.asarray(spec)
    if arr.dtype.kind not in "iuf":
        raise DataError(file, field, f"positions must be numbers, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] != n:
        raise DataError(file, field, f"positions have shape {arr.shape}; expected ({n}, 2) for "
                        f"{n} frames")  # fmt: skip
    if not np.isfinite(arr).all():
        raise DataError(file, field, "positions contain NaN or infinite values")
    return arr, (units or "px")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(p: Path, units: str | None):
    with open(p, encoding="utf-8") as fh:
        first = fh.readline()
    has_header = not all(_is_number(c) for c in first.split(","))  # 1.0e+01 is a number
    if not has_header:
        return np.loadtxt(p, delimiter=",", ndmin=2), units
    names = [c.strip().lower() for c in first.split(",")]
    table = np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2)
    for ycol, xcol, u in (("y", "x", "px"), ("y_px", "x_px", "px"), ("y_m", "x_m", "m")):
        if ycol in names and xcol in names:
            return table[:, [names.index(ycol), names.index(xcol)]], units or u
    raise DataError(p, "header", f"need columns y,x (px) or y_m,x_m (m); found {names}")


def far_field_pixel(wavelength: float, distance: float | None, detector_pixel: float | None,
                    frame_shape: tuple[int, int], file, modality=None,
                    field: str = "pixel_size") -> float | None:
    """The object pixel (m) from the detector geometry: ``modality``'s
    :meth:`~ptytasks.modalities.base.Modality.sample_pixel` (default the far field's);
    ``None`` without a distance and detector pixel. Geometry it refuses (frames that are
    not square) is a :class:`DataError` naming ``file`` and ``field``."""
    from ptytasks.modalities import get

    mod = modality if modality is not None else get("farfield")
    try:
        return mod.sample_pixel(wavelength, distance, detector_pixel, frame_shape)
    except ValueError as exc:
        raise DataError(file, field, str(exc)) from None
