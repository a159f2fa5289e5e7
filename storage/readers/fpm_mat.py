"""Fourier-ptychography MATLAB files (SmartImagingLab layout) with LED geometry.

File fields: ``imlow_HDR`` (y, x, led) low-resolution images, ``wlength`` [m], ``z``
defocus [m], ``xint``/``yint`` offsets [mm] of the first LED from the patch centre,
``theta`` rotation of the LED array [deg], optionally ``aberration`` (a complex pupil).

The illumination geometry (defaults: the UConn microscope of the shared blood-smear data):
a ``grid x grid`` block of a 4 mm-pitch LED array, ``led_height`` below the sample, lit in
an outward square spiral from array coordinate ``start`` stepping +x, +y, -x, -x, -y, -y,
+x, +x, +x, ... (run lengths 1, 1, 2, 2, 3, 3, ...). Each ray crosses a glass slide of
thickness ``slide_thickness`` and index ``slide_index`` before the sample; the in-air
angle is found by solving Snell's law for the ray that leaves the slide under the patch
centre. With ``NA_t`` the sine of that angle and ``phi`` the LED azimuth,
``kx = -NA_t cos(phi)``, ``ky = -NA_t sin(phi)`` in units of ``k0``; divided by the
wavelength they become the run-store wavevectors ``(ky, kx)`` in cycles per metre.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers compression filters (bitshuffle/LZ4, Blosc)
import numpy as np
import scipy.io
from scipy.optimize import brentq

from ptytasks.data import PtychoData
from storage.errors import DataError, wrap_errors
from storage.readers import _common as C

__all__ = ["read_fpm_mat", "led_spiral", "led_wavevectors"]


def led_spiral(start: tuple[int, int], grid: int) -> np.ndarray:
    """Array coordinates ``(n, (x, y))`` of ``grid**2`` LEDs in outward-spiral order."""
    x, y = start
    out = [(x, y)]
    moves = ((1, 0), (0, 1), (-1, 0), (0, -1))
    run, turn = 1, 0
    while len(out) < grid * grid:
        for _ in range(2):  # two legs per run length
            dx, dy = moves[turn % 4]
            for _ in range(run):
                x, y = x + dx, y + dy
                out.append((x, y))
            turn += 1
        run += 1
    return np.asarray(out[: grid * grid], dtype=np.float64)


def _air_sine(l_mm: float, h_mm: float, t_mm: float, n: float) -> float:
    """Sine of the in-air angle of the ray from an LED at lateral distance ``l`` that
    leaves a slide (thickness ``t``, index ``n``) exactly under the patch centre."""
    if l_mm == 0:
        return 0.0

    def miss(a: float) -> float:  # lateral travel in air a, then in glass, minus l
        s_air = a / math.hypot(a, h_mm)
        s_glass = s_air / n
        return a + t_mm * s_glass / math.sqrt(1 - s_glass**2) - l_mm

    a = brentq(miss, 0.0, l_mm, xtol=1e-12)  # miss(0) < 0 < miss(l): monotonic
    return a / math.hypot(a, h_mm)


def led_wavevectors(
    xint_mm: float, yint_mm: float, theta_deg: float, *, start=(18, 20), grid: int = 15,
    pitch_mm: float = 4.0, led_height_mm: float = 90.88, slide_thickness_mm: float = 1.0,
    slide_index: float = 1.52,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``(kx, ky, na_t)`` per LED in units of ``k0``, and the LED offsets ``(n, (x, y))`` mm.

    Returns
    -------
    k : ``(n, (ky, kx))`` in units of k0
    na_t : ``(n,)`` illumination NA
    led_mm : ``(n, (x, y))`` LED positions relative to the patch centre after rotation
    """
    rel = led_spiral(start, grid) - np.asarray(start, np.float64)
    x0 = xint_mm + rel[:, 0] * pitch_mm
    y0 = yint_mm + rel[:, 1] * pitch_mm
    c, s = math.cos(math.radians(theta_deg)), math.sin(math.radians(theta_deg))
    x1, y1 = x0 * c - y0 * s, x0 * s + y0 * c
    na = np.array([_air_sine(math.hypot(a, b), led_height_mm, slide_thickness_mm, slide_index)
                   for a, b in zip(x1, y1, strict=True)])  # fmt: skip
    phi = np.arctan2(y1, x1)
    k = np.stack([-na * np.sin(phi), -na * np.cos(phi)], axis=1)
    return k, na, np.stack([x1, y1], axis=1)


def _load(path: Path) -> dict:
    with wrap_errors(path, None, "reading the MATLAB file"):
        if h5py.is_hdf5(path):  # MATLAB v7.3: HDF5 with reversed (column-major) axes
            with h5py.File(path, "r") as f:
                return {k: _complex_v73(np.asarray(f[k][()])).T for k in f
                        if isinstance(f[k], h5py.Dataset)}  # fmt: skip
        return {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}


def _complex_v73(a: np.ndarray) -> np.ndarray:
    """MATLAB v7.3 stores a complex variable as a compound of ``real`` and ``imag``."""
    names = a.dtype.names or ()
    return a["real"] + 1j * a["imag"] if {"real", "imag"} <= set(names) else a


def _scalar(m: dict, key: str, path, default=None) -> float:
    if key not in m:
        if default is None:
            raise DataError(path, key, "missing from the MATLAB file")
        return default
    v = np.asarray(m[key])
    if v.size != 1 or v.dtype.kind not in "iuf":
        raise DataError(path, key, f"must be one number, got shape {v.shape} dtype {v.dtype}")
    return float(v.reshape(()))


def read_fpm_mat(
    path: str | os.PathLike,
    *,
    na: float = 0.1,
    sample_pixel: float = 1.845e-6,
    magnification: float = 2.0,
    upsample: int = 4,
    start: tuple[int, int] = (18, 20),
    grid: int = 15,
    pitch: float = 4e-3,
    led_height: float = 90.88e-3,
    slide_thickness: float = 1e-3,
    slide_index: float = 1.52,
    images_key: str = "imlow_HDR",
    lazy: bool = False,
    **options,
) -> PtychoData:
    """Read an FPM ``.mat`` file into a ``"fourier"`` :class:`PtychoData`.

    Parameters
    ----------
    na : objective numerical aperture.
    sample_pixel : low-resolution pixel at the sample, m (camera pixel / magnification).
    magnification : objective magnification (gives ``detector_pixel``).
    upsample : reconstruction upsampling; ``pixel_size = sample_pixel / upsample``.
    start, grid, pitch, led_height, slide_thickness, slide_index :
        LED array geometry (m; see module docstring).
    lazy : accepted for symmetry (MATLAB files are read whole).
    **options : :class:`PtychoData` overrides.
    """
    path = Path(path)
    ov = C.split_overrides(options, "read_fpm_mat")
    m = _load(path)
    if images_key not in m:
        raise DataError(path, images_key, f"no image stack (found {sorted(m)})")
    imgs = np.asarray(m[images_key])
    if imgs.ndim != 3 or imgs.dtype.kind not in "iuf":
        raise DataError(path, images_key, f"must be (y, x, led) numbers; got {imgs.shape} "
                        f"{imgs.dtype}")  # fmt: skip
    frames = np.ascontiguousarray(np.moveaxis(imgs, -1, 0), dtype=np.float32)
    n, ny, nx = frames.shape
    if n != grid * grid:
        raise DataError(path, images_key, f"{n} images but a {grid}x{grid} LED grid ({grid**2})")
    wl = ov.pop("wavelength", None) or _scalar(m, "wlength", path)
    if wl > 1e-3:  # some files store nanometres
        raise DataError(path, "wlength", f"{wl:g} is not metres (expected ~5e-7); pass "
                        "wavelength=")  # fmt: skip
    z = _scalar(m, "z", path, 0.0)
    k0, na_t, led_mm = led_wavevectors(
        _scalar(m, "xint", path, 0.0), _scalar(m, "yint", path, 0.0),
        _scalar(m, "theta", path, 0.0), start=start, grid=grid, pitch_mm=pitch * 1e3,
        led_height_mm=led_height * 1e3, slide_thickness_mm=slide_thickness * 1e3,
        slide_index=slide_index,
    )  # fmt: skip
    meta = {"source": str(path), "reader": "fpm_mat", "illumination_na": na_t,
            "led_xy": led_mm * 1e-3}  # fmt: skip
    ab = m.get("aberration")
    if ab is not None and np.asarray(ab).shape == (ny, nx):
        meta["pupil"] = np.asarray(ab).astype(np.complex64)  # pre-calibrated pupil prior
    d = PtychoData(
        modality="fourier", frames=frames, wavelength=float(wl),
        pixel_size=sample_pixel / upsample, object_shape=(ny * upsample, nx * upsample),
        wavevectors=k0 / wl, distance=z, detector_pixel=sample_pixel * magnification,
        params={"na": float(na), "upsample": float(upsample),
                "magnification": float(magnification), "sample_pixel": float(sample_pixel)},
        meta=meta,
    )  # fmt: skip
    return C.finish(d, path, ov, lazy=False)


def read_pupil(path: str | os.PathLike, key: str = "aberration") -> np.ndarray:
    """A measured complex pupil (centred) from a MATLAB file's ``key`` or a ``.npy`` file.

    Raises
    ------
    DataError
        Missing file or variable, or not a finite 2-D array.
    """
    path = Path(path)
    if path.suffix == ".npy":
        with wrap_errors(path, None):
            arr = np.load(path, allow_pickle=False)
    else:
        m = _load(path)
        if key not in m:
            raise DataError(path, key, f"no variable {key!r} (found {sorted(m)})")
        arr = m[key]
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biufc":
        raise DataError(path, key, f"pupil must be numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or not np.all(np.isfinite(arr)):
        raise DataError(path, key, f"pupil must be a finite 2-D array, got shape {arr.shape}")
    return arr.astype(np.complex64)
