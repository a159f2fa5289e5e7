"""Simulators for coded ptychography and Fourier ptychography (visible light).

Conventions, errors and the dose are as in :mod:`ptytasks.simulate.datasets`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.simulate import _common as C
from ptytasks.simulate.objects import complex_object


def _smooth_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise correlated over ``sigma_px`` pixels (periodic)."""
    from scipy.ndimage import gaussian_filter

    s = gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return (s - s.mean()) / s.std()


def coded_surface(shape: tuple[int, int], *, seed: int | None = 0, feature_px: float = 1.0):
    """A random complex coded surface (a thin layer such as blood cells or a diffuser).

    Amplitude ``clip(0.6 + 0.25 n1, 0.1, 1)`` and phase ``(pi / 2) n2`` radians, ``n1, n2``
    smooth unit-variance noise with correlation ``feature_px`` pixels. complex64 ``shape``.
    """
    rng = np.random.default_rng(seed)
    amp = np.clip(0.6 + 0.25 * _smooth_noise(shape, feature_px, rng), 0.1, 1.0)
    phase = 0.5 * math.pi * _smooth_noise(shape, feature_px, rng)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


@C.simulator(object_kind="camera", amplitude_range=(0.5, 1.0), phase_range=(0.0, math.pi))
def simulate_coded(
    *,
    frame_size: int = 64,
    n_positions: int = 25,
    overlap: float = 0.95,
    scan: str = "random",
    wavelength: float = 532e-9,
    pixel_size: float = 1.85e-6,
    distance: float = 300e-6,
    surface_distance: float = 30e-6,
    illumination: str = "plane",
    known_surface: bool = True,
    acq: C.Acquisition,
) -> PtychoData:
    """Lensless coded ptychography: the specimen is translated over a coded image sensor.

    Parameters
    ----------
    frame_size : int
        Sensor window side, pixels (the illuminated field; the overlap refers to it, so
        the default 0.95 means steps of ~3 pixels).
    wavelength, pixel_size : float
        Metres (532 nm laser, 1.85 um sensor pixels; object pixel = sensor pixel).
    distance : float
        Specimen-to-coded-surface distance, metres.
    surface_distance : float
        Coded-surface-to-pixel distance, metres (stored as ``params["surface_distance"]``).
    illumination : {"plane", "weak"}
        Normal-incidence plane wave, or weakly structured (a 0.3 rad, 5 % amplitude
        diffuser pattern with 8-pixel features).
    known_surface : bool
        Put the true surface in ``data.meta["surface"]`` (a calibrated surface, as in
        practice); the truth is always ``ground_truth["surface"]``.
    Others
        The shared settings (:class:`~ptytasks.simulate._common.Acquisition`; default
        object ``camera``, amplitude 0.5-1, phase 0-pi); ``distance_error`` applies to
        ``distance``.
    """
    from ptytasks.physics.models.coded import Coded
    from ptytasks.physics.probes import diffuser_probe

    s_probe, s_noise = acq.seeds()[3:]
    shape = (int(frame_size),) * 2
    flux = acq.flux(shape)
    if illumination == "plane":
        p = np.full(shape, math.sqrt(flux / (shape[0] * shape[1])), dtype=np.complex64)
    elif illumination == "weak":
        p = diffuser_probe(
            shape, pixel_size, wavelength, 0.0, seed=s_probe % 2**31,
            feature_size=8 * pixel_size, phase_range=0.6, amplitude_contrast=0.05,
        )
        p = (p * math.sqrt(flux)).numpy().astype(np.complex64)
    else:
        raise ValueError(f"unknown coded illumination {illumination!r}; use 'plane' or 'weak'")
    surface = coded_surface(shape, seed=s_probe)
    true_px, nom_px, obj, _ = C.specimen(scan, shape[1], overlap, shape, n_positions, acq)
    oshape = obj.shape
    model = Coded(
        true_px, oshape, shape, wavelength=wavelength, distance=distance,
        surface_distance=surface_distance, pixel_size=pixel_size, surface=surface,
    )
    frames = C.measure(model, obj, p, acq.dose, s_noise)
    meta = acq.meta(flux_per_frame=flux, scan=scan, overlap=overlap, illumination=illumination)
    if known_surface:
        meta["surface"] = surface.copy()
    return PtychoData(
        modality="coded", frames=frames, wavelength=wavelength * (1 + acq.wavelength_error),
        pixel_size=pixel_size, object_shape=oshape, positions_px=nom_px,
        distance=distance * (1 + acq.distance_error), detector_pixel=pixel_size,
        params={"surface_distance": surface_distance},
        ground_truth={
            "object": obj, "probe": p, "positions_px": true_px, "surface": surface,
            "wavelength": np.float64(wavelength), "distance": np.float64(distance),
        },
        meta=meta,
    )


def led_wavevectors(
    wavelength: float, pitch: float, height: float, na_illum: float
) -> tuple[np.ndarray, np.ndarray]:
    """Illumination wavevectors of a square LED grid, keeping LEDs within ``na_illum``.

    Parameters
    ----------
    wavelength, pitch, height : float
        Metres: LED pitch and the LED-plane-to-sample distance (grid centred on the axis).
    na_illum : float
        Largest illumination ``sin(theta)`` kept.

    Returns
    -------
    wavevectors : float64 ``(n, 2)``
        ``(ky, kx) = (y, x) / (wavelength * sqrt(x^2 + y^2 + h^2))``, cycles per metre
        (``docs/conventions.md``), ordered by increasing angle (bright field first).
    leds : float64 ``(n, 2)``
        LED ``(y, x)`` positions, metres.
    """
    if not 0 <= na_illum < 1:
        raise ValueError(f"na_illum is sin(theta) and must be in [0, 1); got {na_illum}")
    r_max = height * na_illum / math.sqrt(1 - na_illum**2)
    m = int(r_max / pitch) + 1
    g = np.arange(-m, m + 1) * pitch
    yy, xx = np.meshgrid(g, g, indexing="ij")
    leds = np.stack([yy.ravel(), xx.ravel()], axis=1)
    sin = np.hypot(leds[:, 0], leds[:, 1]) / np.sqrt((leds**2).sum(1) + height**2)
    keep = np.argsort(sin, kind="stable")[: int((sin <= na_illum + 1e-12).sum())]
    leds = leds[keep]
    k = leds / (wavelength * np.sqrt((leds**2).sum(1) + height**2))[:, None]
    return k, leds


@C.simulator(exclude=("distance_error", "margin"), object_kind="usaf",
             amplitude_range=(0.3, 1.0), phase_range=(0.0, math.pi / 2))  # fmt: skip
def simulate_fourier(
    *,
    image_size: int = 64,
    upsample: int = 4,
    overlap: float = 0.65,
    na: float = 0.1,
    na_illum: float = 0.3,
    wavelength: float = 630e-9,
    camera_pixel: float = 6.5e-6,
    magnification: float = 4.0,
    led_height: float = 90e-3,
    led_pitch: float | None = None,
    defocus: float = 0.0,
    aberrations: dict[int, float] | None = None,
    defocus_error: float = 0.0,
    acq: C.Acquisition,
) -> PtychoData:
    """Fourier ptychography: an LED grid under a low-NA objective.

    Parameters
    ----------
    image_size, upsample : int
        Low-resolution image side (pixels) and the high-resolution factor (object side
        ``upsample * image_size``).
    overlap : float
        Spectral overlap of neighbouring pupils, ``1 - dk / (2 na / wavelength)``; sets the
        LED pitch ``(1 - overlap) 2 na led_height`` unless ``led_pitch`` (metres) is given.
    na, na_illum : float
        Objective NA and the largest illumination ``sin(theta)`` (synthetic NA = sum).
    wavelength, camera_pixel, led_height, defocus : float
        Metres; the object-plane image pixel is ``camera_pixel / magnification``.
    aberrations : dict, optional
        ``{noll_index: radians}`` pupil Zernike coefficients (``ptytasks.physics.zernike``).
    defocus_error : float
        Absolute error of the nominal defocus, metres (the nominal defocus is often 0).
    object_kind, amplitude_range, phase_range, dose, dose_unit, position_error_px, \
position_scale_error, wavelength_error, seed
        The shared settings (:class:`~ptytasks.simulate._common.Acquisition`; default
        object ``usaf``, amplitude 0.3-1, phase 0-pi/2): the dose counts photons per frame
        (or per image pixel) of the illumination over the field of view; the position
        error is that of the nominal wavevectors in *spectrum pixels* (``1 / (M pixel)``),
        the scale error theirs (an LED-height error); the nominal wavevectors are computed
        with the nominal wavelength. No ``distance_error`` (``defocus_error``) or ``margin``.
    """
    from ptytasks.physics.models.fourier import FourierPtychography

    s_obj, _, s_err, _, s_noise = acq.seeds()
    m = int(image_size)
    big = m * int(upsample)
    px = camera_pixel / magnification / upsample
    if na / wavelength > 1 / (2 * camera_pixel / magnification):
        raise ValueError(
            f"the image pixel {camera_pixel / magnification:.3g} m undersamples NA {na}: "
            "increase magnification or reduce na"
        )
    pitch = led_pitch or (1 - overlap) * 2 * na * led_height
    k_true, leds = led_wavevectors(wavelength, pitch, led_height, na_illum)
    n = len(k_true)
    k_to_px = big * px
    lam_nom = wavelength * (1 + acq.wavelength_error)
    k_nom = k_true * (1 + acq.position_scale_error) * wavelength / lam_nom
    k_nom = k_nom + C.random_errors(n, acq.position_error_px, s_err) / k_to_px
    # The window of the steepest LED must stay inside the object spectrum.
    na_max = wavelength * (1 / (2 * px) - 1 / (2 * camera_pixel / magnification))
    for name, k in (("true", k_true), ("nominal", k_nom)):
        lo = big // 2 - m // 2 + k * k_to_px
        if lo.min() < 0 or lo.max() + m > big:
            raise ValueError(
                f"{name} LED wavevectors reach illumination NA "
                f"{np.hypot(*k.T).max() * wavelength:.3g}, beyond the {na_max:.3g} that the "
                f"{upsample}x object grid holds: increase upsample or reduce na_illum"
            )
    n_z = max([15, *(aberrations or {}).keys()])
    coeffs = np.zeros(n_z)
    for j, c in (aberrations or {}).items():
        coeffs[int(j) - 1] = float(c)
    flux = acq.flux((m, m))
    illum = np.full((big, big), math.sqrt(flux / (m * m)), dtype=np.complex64)
    obj = complex_object((big, big), acq.object_kind, amplitude_range=acq.amplitude_range,
                         phase_range=acq.phase_range, seed=s_obj)  # fmt: skip
    model = FourierPtychography(
        k_true, (big, big), (m, m), wavelength=wavelength, na=na, pixel_size=px,
        distance=defocus, zernike_indices=n_z,
    )
    model.zernike.data = torch.as_tensor(coeffs, dtype=model.zernike.dtype)
    frames = C.measure(model, obj, illum, acq.dose, s_noise)
    with torch.no_grad():
        pupil = model.pupil_function().numpy().astype(np.complex64)
    return PtychoData(
        modality="fourier", frames=frames, wavelength=lam_nom,
        pixel_size=px, object_shape=(big, big), wavevectors=k_nom,
        distance=defocus + defocus_error, detector_pixel=camera_pixel,
        params={"na": na, "upsample": float(upsample), "magnification": magnification,
                "na_illum": na_illum, "led_height": led_height, "led_pitch": pitch},
        ground_truth={
            "object": obj, "probe": illum, "pupil": pupil, "wavevectors": k_true,
            "zernike": coeffs, "leds": leds, "wavelength": np.float64(wavelength),
            "distance": np.float64(defocus),
        },
        meta=acq.meta(omit=("distance_error",), flux_per_frame=flux, overlap=overlap,
                      defocus_error=defocus_error),  # fmt: skip
    )
