"""Simulated datasets for the four modalities, made with the reconstruction's forward models.

Each ``simulate_<modality>`` returns a :class:`~ptytasks.data.PtychoData` whose frames are
``model(true object, true probe)`` (plus Poisson noise when a ``dose`` is given) and whose
``ground_truth`` holds the TRUE object, probe, positions (and surface / pupil / wavevectors,
wavelength, distance). The dataset's own geometry (``positions_px``, ``wavevectors``,
``distance``, ``wavelength``, ``pixel_size``) is the NOMINAL one, carrying the injected
errors, exactly as an experiment's metadata would.

Errors
------
``position_error_px``
    RMS length (pixels) of the random 2-D position error ``sqrt(mean |dp|^2)``; the errors
    are zero-mean (a common shift is unobservable) and scaled to this RMS exactly.
``position_scale_error``
    Relative error of the scan's scale about its centroid (e.g. a wrong stage calibration).
``distance_error``, ``wavelength_error``
    Relative errors of the nominal values (nominal = true * (1 + error)).

Intensity scale: the probe carries ``dose`` photons (or electrons) per frame (or per
detector pixel with ``dose_unit="pixel"``); with ``dose=None`` the frames are noise-free at
:data:`~ptytasks.simulate._common.NOISE_FREE_FLUX` (1e6) per frame, so noisy and
noise-free sets share a scale.
"""

from __future__ import annotations

import math

import numpy as np

from ptytasks.data import PtychoData
from ptytasks.simulate import _common as C


def simulated_zone_plate(shape, pixel_size: float, wavelength: float, diameter_px: float,
                         defocus_factor: float = 1.0):
    """The far-field simulator's X-ray zone-plate probe (torch, complex).

    Outer zone 1.25 object pixels, 100 um diameter: the focus NA fills 80 % of the detector;
    the focus-to-sample defocus sets the footprint ``D dz / f`` to ``diameter_px`` pixels.
    ``defocus_factor`` scales that defocus: a probe prior "estimated from the defocus" with
    a known relative error (1.05: 5 % too far).

    Parameters
    ----------
    shape : (int, int)
        Frame shape, pixels.
    pixel_size, wavelength : float
        Object-plane pixel and wavelength, metres.
    diameter_px : float
        Footprint diameter in object pixels (``data.meta["probe_diameter_px"]``).
    defocus_factor : float
        Multiplier of the defocus.
    """
    from ptytasks.physics.probes import zone_plate_probe

    px, lam = float(pixel_size), float(wavelength)
    d_fzp, dr = 100e-6, 1.25 * px
    f = d_fzp * dr / lam
    dz = diameter_px * px * f / d_fzp
    return zone_plate_probe(tuple(shape), px, lam, d_fzp, dr, defocus=dz * defocus_factor)


# --- far-field --------------------------------------------------------------------------
@C.simulator(object_kind="camera", amplitude_range=(0.8, 1.0), phase_range=(0.0, math.pi / 2))
def simulate_farfield(
    *,
    frame_size: int = 64,
    n_positions: int = 100,
    overlap: float = 0.65,
    scan: str = "fermat",
    probe: str = "zone_plate",
    probe_diameter_px: float | None = None,
    energy_ev: float = 8000.0,
    voltage: float = 300e3,
    detector_distance: float = 2.0,
    detector_pixel: float = 75e-6,
    known_probe: bool = False,
    mode_fractions: tuple[float, ...] | None = None,
    n_slices: int = 1,
    slice_distance: float | None = None,
    acq: C.Acquisition,
) -> PtychoData:
    """Far-field (Fraunhofer) ptychography: X-ray (8 keV, zone plate) or electron (STEM).

    Parameters
    ----------
    frame_size : int
        Detector frame (= probe window) side ``N``, pixels.
    n_positions, overlap, scan
        Scan: count, linear overlap ``1 - step / probe diameter``, kind
        (:data:`ptytasks.simulate.scans.SCANS`).
    probe : {"zone_plate", "gaussian", "electron"}
        Defocused Fresnel zone plate (X-ray), Gaussian beam with flat phase (X-ray), or a
        defocused convergent electron probe (``voltage`` volts, 20 mrad semi-angle).
    probe_diameter_px : float, optional
        Probe footprint diameter, object pixels (default ``0.35 N``): the geometric cone
        for the zone plate/electron probe, ``2 w`` (1/e^2 intensity) for the Gaussian.
    energy_ev : float
        X-ray photon energy, eV.
    detector_distance, detector_pixel : float
        Metres (camera length for electrons). The object pixel is
        ``wavelength * distance / (N * detector_pixel)``. For electrons ``detector_pixel``
        is derived instead: the bright-field disc spans half the detector (radius ``N/4``).
    known_probe : bool
        Also put the true probe in ``data.probe`` (known-probe reconstruction).
    mode_fractions : sequence of float, optional
        A partially coherent probe: ``len(mode_fractions)`` incoherent modes with these
        power shares (:func:`~ptytasks.physics.modes.partially_coherent_modes`); the true
        probe is then ``(K, N, N)``. Default: one coherent mode.
    n_slices, slice_distance : int, float
        A thick specimen: ``n_slices`` different objects (seeds ``seed``-derived, one per
        slice; an ``object_kind`` drawn per seed, ``objects.SEEDED``) ``slice_distance``
        metres apart, multislice forward model; the true object
        is then ``(S, ny, nx)`` and ``params["slice_distance"]`` holds the spacing.
    object_kind, amplitude_range, phase_range, dose, dose_unit, position_error_px, \
position_scale_error, distance_error, wavelength_error, margin, seed
        The shared settings (:class:`~ptytasks.simulate._common.Acquisition`; default
        object ``camera``, amplitude 0.8-1, phase 0-pi/2). Distance and wavelength errors
        change the nominal pixel size, and so the nominal positions in pixels, as when a
        reader converts stage positions in metres with that pixel size.
    """
    from ptytasks.physics.models.farfield import FarField
    from ptytasks.physics.probes import (
        electron_probe,
        electron_voltage,
        electron_wavelength,
        gaussian_probe,
    )

    s_obj, s_scan, s_err, s_probe, s_noise = acq.seeds()
    n = int(frame_size)
    shape = (n, n)
    diam = float(probe_diameter_px or 0.35 * n)
    if probe == "electron":
        lam = electron_wavelength(voltage)
        alpha = 0.02
        # Bright-field disc radius N/4 detector pixels -> angle pitch 4 alpha / N.
        detector_pixel = detector_distance * 4 * alpha / n
    elif probe in ("zone_plate", "gaussian"):
        lam = C.H_C_EV_M / energy_ev
    else:
        raise ValueError(f"unknown far-field probe {probe!r}; use zone_plate, gaussian, electron")
    px = lam * detector_distance / (n * detector_pixel)
    if probe == "zone_plate":
        p = simulated_zone_plate(shape, px, lam, diam)
    elif probe == "gaussian":
        p = gaussian_probe(shape, px, waist=diam * px / 2)
    else:
        p = electron_probe(shape, px, voltage, alpha, defocus=diam * px / (2 * alpha))
    flux = acq.flux(shape)
    p = C.mixed_state((p * math.sqrt(flux)).numpy().astype(np.complex64), mode_fractions,
                      s_probe)

    lam_nom = lam * (1 + acq.wavelength_error)
    z_nom = detector_distance * (1 + acq.distance_error)
    px_nom = lam_nom * z_nom / (n * detector_pixel)
    scale = (1 + acq.position_scale_error) * px / px_nom
    true_px, nom_px, obj, _ = C.specimen(scan, diam, overlap, shape, n_positions, acq, scale,
                                         n_slices)  # fmt: skip
    oshape = obj.shape[-2:]
    model = FarField(true_px, oshape, shape)
    # the file's beam energy is the nominal wavelength's (a wavelength error is the file's)
    params = ({"energy_ev": C.H_C_EV_M / lam_nom} if probe != "electron" else
              {"voltage": voltage if not acq.wavelength_error else electron_voltage(lam_nom)})
    if n_slices > 1:
        if not (slice_distance and slice_distance > 0):
            raise ValueError(f"{n_slices} slices need slice_distance > 0 metres")
        model.set_slices(slice_distance, wavelength=lam, pixel_size=px)
        params["slice_distance"] = float(slice_distance)
    frames = C.measure(model, obj, p, acq.dose, s_noise)
    return PtychoData(
        modality="farfield", frames=frames, wavelength=lam_nom, pixel_size=px_nom,
        object_shape=oshape, positions_px=nom_px, distance=z_nom, detector_pixel=detector_pixel,
        probe=p.copy() if known_probe else None,
        params=params,
        ground_truth={
            "object": obj, "probe": p, "positions_px": true_px,
            "wavelength": np.float64(lam), "distance": np.float64(detector_distance),
            "pixel_size": np.float64(px),
        },
        meta=acq.meta(
            flux_per_frame=flux, scan=scan, overlap=overlap, probe_kind=probe,
            probe_diameter_px=diam, n_slices=int(n_slices),
            mode_fractions=None if mode_fractions is None else list(mode_fractions),
        ),
    )


# --- near-field -------------------------------------------------------------------------
@C.simulator(object_kind="dead_leaves", amplitude_range=(0.9, 1.0), phase_range=(0.0, 1.0))
def simulate_nearfield(
    *,
    frame_size: int = 128,
    n_positions: int = 16,
    overlap: float = 0.85,
    scan: str = "random",
    energy_ev: float = 8000.0,
    z1: float = 0.01,
    z2: float = 0.49,
    detector_pixel: float = 5e-6,
    diffuser_distance: float = 2e-3,
    diffuser_feature_px: float = 3.0,
    known_probe: bool = False,
    mode_fractions: tuple[float, ...] | None = None,
    acq: C.Acquisition,
) -> PtychoData:
    """Near-field (Fresnel) ptychography with diffuser-structured X-ray illumination.

    Cone-beam geometry: focus-to-sample ``z1``, sample-to-detector ``z2`` (metres),
    ``detector_pixel`` (metres); by the Fresnel scaling theorem the model runs at the
    effective pixel ``detector_pixel / M`` and distance ``z2 / M``, ``M = (z1 + z2) / z1``
    (defaults: M = 50, 100 nm pixel, 9.8 mm; Fresnel number per pixel ~0.007). The probe
    (a random diffuser propagated ``diffuser_distance`` metres, features
    ``diffuser_feature_px`` pixels) fills the whole frame, so the overlap refers to the
    frame width. Other parameters (``mode_fractions`` too) as :func:`simulate_farfield`
    (default object ``dead_leaves``, amplitude 0.9-1, phase 0-1 rad); ``distance_error``
    scales the effective distance and the nominal ``params`` ``z1``, ``z2`` alike.
    """
    from ptytasks.physics.models.nearfield import NearField
    from ptytasks.physics.probes import diffuser_probe
    from ptytasks.physics.propagators import fresnel_scaling

    s_obj, s_scan, s_err, s_probe, s_noise = acq.seeds()
    shape = (int(frame_size),) * 2
    lam = C.H_C_EV_M / energy_ev
    geo = fresnel_scaling(z1, z2, detector_pixel)
    px, z = geo["effective_pixel"], geo["effective_distance"]
    flux = acq.flux(shape)
    p = diffuser_probe(
        shape, px, lam, diffuser_distance, seed=s_probe % 2**31,
        feature_size=diffuser_feature_px * px,
    )
    p = C.mixed_state((p * math.sqrt(flux)).numpy().astype(np.complex64), mode_fractions,
                      s_probe + 1)
    true_px, nom_px, obj, _ = C.specimen(scan, shape[1], overlap, shape, n_positions, acq)
    oshape = obj.shape
    model = NearField(true_px, oshape, shape, wavelength=lam, distance=z, pixel_size=px)
    frames = C.measure(model, obj, p, acq.dose, s_noise)
    err = 1 + acq.distance_error
    lam_nom, z_nom = lam * (1 + acq.wavelength_error), z * err
    return PtychoData(
        modality="nearfield", frames=frames, wavelength=lam_nom, pixel_size=px,
        object_shape=oshape, positions_px=nom_px, distance=z_nom, detector_pixel=detector_pixel,
        probe=p.copy() if known_probe else None,
        # A distance error scales z1 and z2 together: same magnification and pixel, and the
        # nominal z2 / M equals the nominal effective distance (a self-consistent file).
        params={"z1": z1 * err, "z2": z2 * err,
                "magnification": geo["magnification"], "energy_ev": C.H_C_EV_M / lam_nom},
        ground_truth={
            "object": obj, "probe": p, "positions_px": true_px,
            "wavelength": np.float64(lam), "distance": np.float64(z),
        },
        meta=acq.meta(
            flux_per_frame=flux, scan=scan, overlap=overlap, probe_kind="diffuser",
            mode_fractions=None if mode_fractions is None else list(mode_fractions),
        ),
    )


# --- dispatch ---------------------------------------------------------------------------
def simulate(modality: str, **kwargs) -> PtychoData:
    """Simulate a dataset of ``modality`` (a registered one, :func:`ptytasks.modalities.names`).

    Keyword arguments go to the modality's simulator (:func:`simulate_farfield`,
    :func:`simulate_nearfield`, :func:`~ptytasks.simulate.coded_fourier.simulate_coded` or
    :func:`~ptytasks.simulate.coded_fourier.simulate_fourier`, where ``frame_size`` is
    accepted for ``image_size``). Unknown keywords raise ``TypeError``.
    """
    from ptytasks.modalities import get

    return get(modality).simulate(**kwargs)
