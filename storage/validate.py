"""Checks that turn bad input into a clear :class:`~storage.errors.DataError`.

Every reader calls :func:`validate_data` on the :class:`~ptytasks.data.PtychoData` it
builds, and :class:`~storage.store.RunStore` calls it before writing raw data, so that a
store never holds (or marks complete) data that would later fail inside an engine.

Physical plausibility ranges are deliberately wide (they catch unit mistakes such as a
wavelength given in nanometres, not unusual experiments):

=================  =======================  ==========================================
quantity           accepted (SI)            typical mistake caught
=================  =======================  ==========================================
wavelength         1e-13 .. 1e-5 m          532 (nm) or 0.0979 (nm) given as metres
pixel_size         1e-12 .. 1e-2 m          pixel size in micrometres
detector_pixel     1e-9 .. 1e-1 m           55 (um)
distance           |d| <= 1e3 m             millimetres given as metres
=================  =======================  ==========================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ptytasks.data import PtychoData
from ptytasks.modalities import get as get_modality
from ptytasks.modalities import names as modality_names
from storage.errors import DataError

__all__ = [
    "validate_data",
    "check_frames",
    "check_positive_scalar",
    "check_wavelength",
    "check_array",
    "check_positions_extent",
    "WAVELENGTH_RANGE",
    "POSITION_UNITS",
]

WAVELENGTH_RANGE = (1e-13, 1e-5)
PIXEL_RANGE = (1e-12, 1e-2)
DETECTOR_PIXEL_RANGE = (1e-9, 1e-1)
MAX_DISTANCE = 1e3
#: Units a reader accepts for scan positions: object pixels or metres.
POSITION_UNITS = ("px", "m")
#: Most area the object implied by a scan's positions may have, as a multiple of the area of
#: all its frames side by side (at least :data:`MAX_OBJECT_FLOOR_PX`). A ptychographic scan
#: overlaps its windows, so its object is smaller than its frames laid side by side: the
#: shared real datasets imply 0.02-0.03x (Siemens star, P25 near field), the simulators
#: 0.06-0.2x; 1e4x still admits windows a hundred widths apart. A unit mistake multiplies
#: every position by 1/pixel_size (pixels declared as metres: 1e2 to 1e12 per axis, 1e6+
#: for any real pixel size) and lands far beyond it.
MAX_OBJECT_AREA_RATIO = 1e4
#: Objects up to this many pixels (8192 x 8192, 512 MiB complex64) pass whatever the frames,
#: so few-frame test data with a wide margin is never refused.
MAX_OBJECT_FLOOR_PX = 2**26
# Frames are checked in blocks so a check of a large stack never doubles its memory.
_BLOCK_BYTES = 64 * 2**20


def check_positive_scalar(value, file, field: str, lo: float, hi: float, unit: str = "m"):
    """A finite float in ``[lo, hi]``; returns it as ``float``."""
    try:
        v = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError) as exc:
        raise DataError(file, field, f"expected one number in {unit}, got {value!r}") from exc
    if not math.isfinite(v) or v <= 0:
        raise DataError(file, field, f"must be a positive finite number ({unit}), got {v!r}")
    if not lo <= v <= hi:
        raise DataError(
            file,
            field,
            f"{v:g} {unit} is outside the plausible range [{lo:g}, {hi:g}] {unit}; "
            "check the units (SI: metres)",
        )
    return v


def check_wavelength(value, file, field: str = "wavelength") -> float:
    """Wavelength in metres, with a hint when it looks like nanometres or Angstrom."""
    try:
        v = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError) as exc:
        raise DataError(file, field, f"expected one number in m, got {value!r}") from exc
    lo, hi = WAVELENGTH_RANGE
    if math.isfinite(v) and v > 0 and not lo <= v <= hi:
        hint = ""
        if 1e-3 <= v <= 1e4:
            hint = f" -- it looks like nanometres or Angstrom; pass {v:g}e-9 (nm) metres"
        raise DataError(file, field, f"wavelength {v:g} m is outside [{lo:g}, {hi:g}] m{hint}")
    return check_positive_scalar(v, file, field, lo, hi)


def check_array(a, file, field: str, ndim: int | None = None, shape=None, complex_ok=True):
    """A finite numeric array with the given rank/shape (``None`` entries are free)."""
    if a is None:
        raise DataError(file, field, "is missing")
    try:
        arr = np.asarray(a)
    except Exception as exc:  # noqa: BLE001 - any failure to form an array is a data error
        raise DataError(file, field, f"cannot be read as an array: {exc}") from exc
    kinds = "biufc" if complex_ok else "biuf"
    if arr.dtype.kind not in kinds:
        raise DataError(file, field, f"has unsupported dtype {arr.dtype} (numbers needed)")
    if ndim is not None and arr.ndim != ndim:
        raise DataError(file, field, f"must have {ndim} dimensions, got shape {arr.shape}")
    if shape is not None:
        for got, want in zip(arr.shape, shape, strict=False):
            if want is not None and got != want:
                raise DataError(file, field, f"has shape {arr.shape}, expected {tuple(shape)}")
    if arr.size and arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise DataError(file, field, "contains NaN or infinite values")
    return arr


def check_probe(probe, file, field: str = "probe", frame_shape=None) -> np.ndarray:
    """A probe ``(y, x)`` or incoherent modes ``(modes, y, x)``, complex64.

    Leading singleton axes are dropped, so the tike/PtychoShelves layout
    ``(1, 1, modes, y, x)`` keeps all its modes; one mode comes back 2-D. ``frame_shape``
    given: the probe's ``(y, x)`` must equal it (the forward models of the probe
    modalities light a window of the frame's size).
    """
    arr = check_array(probe, file, field)
    lead = arr.shape[:-2]
    if arr.ndim < 2 or sum(s > 1 for s in lead) > 1:
        raise DataError(file, field, f"must be (y, x) or (modes, y, x) (leading axes of length "
                        f"1 allowed); got shape {arr.shape}")  # fmt: skip
    arr = arr.reshape(-1, *arr.shape[-2:]).astype(np.complex64, copy=False)
    if arr.shape[0] == 0:
        raise DataError(file, field, f"has no modes (shape {probe.shape})")
    if frame_shape is not None and arr.shape[-2:] != tuple(int(s) for s in frame_shape):
        raise DataError(file, field, f"probe is {arr.shape[-2]}x{arr.shape[-1]} but the frames "
                        f"are {frame_shape[0]}x{frame_shape[1]}: a probe must have the frames' "
                        "shape (crop or pad it, or leave it out to estimate one)")  # fmt: skip
    return arr[0] if arr.shape[0] == 1 else arr


def check_positions_extent(positions_px, window, file, field: str = "positions_px",
                           units: str | None = None, pixel_size: float | None = None) -> None:
    """Refuse positions implying an implausibly large object (a unit mistake).

    The object they imply (their span plus one ``window``) may have at most
    :data:`MAX_OBJECT_AREA_RATIO` times the area of all frames (or
    :data:`MAX_OBJECT_FLOOR_PX` pixels); see there. ``units`` and ``pixel_size`` (how the
    positions were converted) make the hint specific.
    """
    p = np.asarray(positions_px, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or not p.size or not np.isfinite(p).all():
        return  # shape and values are checked elsewhere
    wy, wx = (int(v) for v in window)
    span = p.max(0) - p.min(0)
    area = (span[0] + wy) * (span[1] + wx)
    limit = max(MAX_OBJECT_AREA_RATIO * p.shape[0] * wy * wx, MAX_OBJECT_FLOOR_PX)
    if area <= limit:
        return
    if units == "m":
        how = (f"they were taken as metres and divided by pixel_size {pixel_size:g} m; if they "
               "are pixels, say positions_units='px' (or name the CSV columns y,x)"
               if pixel_size else "they were taken as metres; if they are pixels, say "
               "positions_units='px'")  # fmt: skip
    else:
        how = "check their units (positions_units 'px' or 'm') and pixel_size"
    raise DataError(file, field, f"positions span {span[0]:.4g} x {span[1]:.4g} object pixels, "
                    f"an object over {MAX_OBJECT_AREA_RATIO:g} times the area of all "
                    f"{p.shape[0]} frames ({wy}x{wx}): implausible, probably the wrong units; "
                    f"{how}")  # fmt: skip


def check_frames(frames, file, field: str = "frames", values: bool = True):
    """Frames ``(scan, det_y, det_x)``: real, finite, non-negative counts.

    Works on any array-like with ``shape``/``dtype`` and slicing (NumPy, h5py, zarr), in
    blocks of frames, so it can validate a stream without loading it.
    """
    shape = getattr(frames, "shape", None)
    dtype = getattr(frames, "dtype", None)
    if shape is None or dtype is None:
        frames = np.asarray(frames)
        shape, dtype = frames.shape, frames.dtype
    dtype = np.dtype(dtype)
    if len(shape) != 3:
        raise DataError(file, field, f"must be (scan, det_y, det_x), got shape {tuple(shape)}")
    if min(shape) < 1:
        raise DataError(file, field, f"is empty: shape {tuple(shape)}")
    if dtype.kind == "c":
        raise DataError(file, field, "are complex; measured intensities must be real counts")
    if dtype.kind not in "iuf":
        raise DataError(file, field, f"have unsupported dtype {dtype} (numbers needed)")
    if not values:
        return frames
    per = max(1, _BLOCK_BYTES // max(1, shape[1] * shape[2] * dtype.itemsize))
    for s in range(0, shape[0], per):
        block = np.asarray(frames[s : s + per])
        if dtype.kind == "f" and not np.isfinite(block).all():
            bad = s + int(np.argwhere(~np.isfinite(block))[0][0])
            raise DataError(file, field, f"frame {bad} contains NaN or infinite values")
        if dtype.kind in "if" and block.min() < 0:
            bad = s + int(np.argwhere(block < 0)[0][0])
            raise DataError(
                file,
                field,
                f"frame {bad} has negative counts (min {block.min():g}); intensities must be >= 0",
            )
    return frames


def _check_positions(d: PtychoData, file) -> np.ndarray:
    n = d.n_frames
    pos = check_array(d.positions_px, file, "positions_px", ndim=2, complex_ok=False)
    if pos.shape != (n, 2):
        raise DataError(
            file, "positions_px", f"shape {pos.shape} does not match {n} frames: expected ({n}, 2)"
        )
    pos = pos.astype(np.float64, copy=False)
    check_positions_extent(pos, d.frame_shape, file)
    oy, ox = d.object_shape
    tol = 1.0  # sub-pixel windows may poke out by interpolation rounding
    if get_modality(d.modality).localized_probe:  # the probe window must fit the object
        wy, wx = d.probe.shape[-2:] if d.probe is not None else d.frame_shape
        if (
            (pos.min(0) < -tol).any()
            or (pos[:, 0].max() + wy > oy + tol)
            or (pos[:, 1].max() + wx > ox + tol)
        ):
            raise DataError(
                file,
                "positions_px",
                f"probe windows ({wy}x{wx}) at positions "
                f"{pos.min(0).round(1).tolist()}..{pos.max(0).round(1).tolist()} do not fit in "
                f"object_shape {d.object_shape}",
            )
    elif (pos.min(0) < -tol).any() or pos[:, 0].max() > oy or pos[:, 1].max() > ox:
        raise DataError(file, "positions_px", f"positions fall outside object {d.object_shape}")
    return pos


def _check_wavevectors(d: PtychoData, file, wavelength: float) -> np.ndarray:
    n = d.n_frames
    k = check_array(d.wavevectors, file, "wavevectors", ndim=2, complex_ok=False)
    if k.shape != (n, 2):
        raise DataError(
            file, "wavevectors", f"shape {k.shape} does not match {n} frames: expected ({n}, 2)"
        )
    k = k.astype(np.float64, copy=False)
    sin_theta = np.hypot(k[:, 0], k[:, 1]) * wavelength
    if sin_theta.max() >= 1.0:
        raise DataError(
            file,
            "wavevectors",
            f"|k| * wavelength reaches {sin_theta.max():.3g} >= 1: "
            "wavevectors must be cycles per metre (sin(theta) / wavelength)",
        )
    if 0 < sin_theta.max() < 1e-6:
        raise DataError(
            file,
            "wavevectors",
            "|k| * wavelength is below 1e-6 everywhere: they look like units "
            "of k0 (sin(theta)); divide by the wavelength to get cycles per metre",
        )
    return k


def validate_data(d: PtychoData, file=None, check_values: bool = True) -> PtychoData:
    """Validate ``d`` and return it with canonical dtypes.

    Frames become float32, positions and wavevectors float64, probe complex64; nothing is
    copied when the dtype is already canonical.

    Parameters
    ----------
    d : PtychoData
    file : path-like or None
        Named in the error messages.
    check_values : bool
        Scan the frames for NaN/inf/negative values (in blocks). Streaming writers that
        already checked each block pass ``False``.

    Raises
    ------
    DataError
        Naming the file and the field at fault.
    """
    if d.modality not in modality_names():
        raise DataError(file, "modality", f"{d.modality!r} is not one of {modality_names()}")
    mod = get_modality(d.modality)
    check_frames(d.frames, file, values=check_values)
    wl = check_wavelength(d.wavelength, file)
    px = check_positive_scalar(d.pixel_size, file, "pixel_size", *PIXEL_RANGE)
    try:
        oshape = tuple(int(v) for v in d.object_shape)
    except (TypeError, ValueError) as exc:
        raise DataError(
            file, "object_shape", f"expected two integers, got {d.object_shape!r}"
        ) from exc
    if len(oshape) != 2 or min(oshape) < 1:
        raise DataError(file, "object_shape", f"expected two positive integers, got {oshape}")
    d.object_shape = oshape
    if d.distance is not None:
        dist = float(d.distance)
        if not math.isfinite(dist) or abs(dist) > MAX_DISTANCE:
            raise DataError(file, "distance", f"{dist!r} m is not a plausible distance")
        if mod.scanning and dist <= 0:
            raise DataError(file, "distance", f"must be > 0 m for {d.modality}, got {dist:g}")
        d.distance = dist
    if d.detector_pixel is not None:
        d.detector_pixel = check_positive_scalar(
            d.detector_pixel, file, "detector_pixel", *DETECTOR_PIXEL_RANGE
        )
    if d.probe is not None:  # before the positions, whose windows have the probe's shape
        # a pupil modality keeps its illumination elsewhere (a stored probe is not used)
        d.probe = check_probe(d.probe, file, frame_shape=None if mod.has_pupil
                              else tuple(d.frame_shape))  # fmt: skip
    # scanning data needs positions, angle-illuminated data wavevectors (checked where given)
    if mod.scanning or d.positions_px is not None:
        d.positions_px = _check_positions(d, file)
    if not mod.scanning or d.wavevectors is not None:
        d.wavevectors = _check_wavevectors(d, file, wl)
    if not isinstance(d.params, Mapping):
        raise DataError(file, "params", f"must be a mapping of name -> number, got {d.params!r}")
    for key, v in d.params.items():
        try:
            fv = float(v)
        except (TypeError, ValueError) as exc:
            raise DataError(file, f"params.{key}", f"must be a number, got {v!r}") from exc
        if not math.isfinite(fv):
            raise DataError(file, f"params.{key}", f"must be finite, got {fv!r}")
    if d.ground_truth is not None:
        for key, v in d.ground_truth.items():
            check_array(v, file, f"ground_truth.{key}")
        truth = d.ground_truth.get("object")
        if truth is not None and any(t < o for t, o in zip(np.shape(truth)[-2:],
                                                           d.object_shape, strict=True)):
            # the evaluation scores the reconstruction where the truth is: a smaller one
            # leaves the trusted region outside it ("mask selects no pixels" at the end)
            raise DataError(file, "ground_truth.object", f"shape {np.shape(truth)[-2:]} is "
                            f"smaller than the object the positions span, {d.object_shape}")
    d.wavelength, d.pixel_size = wl, px
    if isinstance(d.frames, np.ndarray) and d.frames.dtype != np.float32:
        d.frames = d.frames.astype(np.float32)
    return d
