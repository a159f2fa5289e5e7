"""Priors the engines start from: probe (or pupil) from the data, object from a quick
projection run, and the illumination weight a tile contributes to the stitched mosaic."""

from __future__ import annotations

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.engines.result import ReconstructionResult
from ptytasks.modalities import modality_of
from ptytasks.physics.shifts import insert_patches


def mean_pattern_probe(data: PtychoData) -> np.ndarray:
    """The probe estimated from the frames alone: what the engines start from when a file
    has none (:func:`ptytasks.engines.pie.initial_probe`: far field, the mean pattern's
    aperture with the defocus the frames choose; near field, a phase-only-object ePIE on a
    trial set; otherwise the back-propagated root-mean frame).
    """
    from ptytasks.engines.pie import initial_probe
    from ptytasks.modalities import model_for

    model = model_for(data)
    return initial_probe(data, model, torch.device("cpu"), torch.complex64).numpy()


def physical_probe(data: PtychoData) -> np.ndarray:
    """Probe from the beam parameters in ``data.params`` (SI units).

    Electron: ``voltage`` [V], ``convergence_semiangle`` [rad], optional ``defocus`` [m] and
    ``cs`` [m]. X-ray zone plate: ``zp_diameter`` [m], ``zp_outer_zone`` [m], optional
    ``defocus`` [m] and ``zp_central_stop`` (fraction). Scaled to the mean frame counts.
    """
    from ptytasks.physics.probes import electron_probe, zone_plate_probe

    prm = data.params
    if "voltage" in prm and "convergence_semiangle" in prm:
        ab = {"Cs": prm["cs"]} if "cs" in prm else None  # electron_probe's key
        p = electron_probe(data.frame_shape, data.pixel_size, prm["voltage"],
                           prm["convergence_semiangle"], prm.get("defocus", 0.0), ab)  # fmt: skip
    elif "zp_diameter" in prm and "zp_outer_zone" in prm:
        p = zone_plate_probe(data.frame_shape, data.pixel_size, data.wavelength,
                             prm["zp_diameter"], prm["zp_outer_zone"], prm.get("defocus", 0.0),
                             prm.get("zp_central_stop", 0.0))  # fmt: skip
    else:
        raise ValueError(
            "probe prior 'physical' needs params voltage + convergence_semiangle (electron) or "
            f"zp_diameter + zp_outer_zone (X-ray zone plate); the dataset has {sorted(prm)}"
        )
    p = p.numpy().astype(np.complex64)
    # Probes are normalised to unit power; the frames give the counts per frame.
    return p * np.sqrt(float(np.mean(np.sum(data.frames, axis=(1, 2)))) / np.sum(np.abs(p) ** 2))


def probe_prior_kind(data: PtychoData, source: str = "data") -> str | None:
    """Which probe :func:`probe_prior` makes for ``data`` from ``source``: ``None``
    (Fourier ptychography: a pupil, no probe), ``"stored"`` (the dataset's own),
    ``"physical"`` (:func:`physical_probe`), ``"plane_wave"`` (full-frame illumination) or
    ``"mean_pattern"`` (a blind estimate from the frames). Raises on an unknown source."""
    mod = modality_of(data)
    if mod.has_pupil:
        return None
    if source == "data" and data.probe is not None:
        return "stored"
    if source == "physical":
        return "physical"
    if not mod.localized_probe:
        return "plane_wave"
    if source in ("data", "mean_pattern"):
        return "mean_pattern"
    raise ValueError(f"unknown probe prior {source!r}; use 'data', 'mean_pattern' or 'physical'")


def probe_prior(data: PtychoData, source: str = "data") -> np.ndarray | None:
    """The probe prior of ``data`` (None for Fourier ptychography, which has a pupil).

    Parameters
    ----------
    source : {"data", "mean_pattern", "physical"}
        ``data``: the dataset's own probe when it has one, else the mean-pattern probe;
        ``physical``: :func:`physical_probe`.
    """
    kind = probe_prior_kind(data, source)
    if kind is None:
        return None
    if kind == "stored":
        return np.asarray(data.probe, np.complex64)
    if kind == "physical":
        return physical_probe(data)
    if kind == "plane_wave":
        # Full-frame illumination: a plane wave carrying the mean counts per pixel (lazy
        # frames are averaged a block at a time).
        f = data.frames
        blocks = f.iter_blocks() if hasattr(f, "iter_blocks") else [(0, np.asarray(f))]
        total = sum(float(np.sum(b, dtype=np.float64)) for _, b in blocks)
        mean = total / float(np.prod(f.shape))
        return np.full(data.frame_shape, np.sqrt(mean), np.complex64)
    return mean_pattern_probe(data).astype(np.complex64)


def probe_prior_from_frames(data: PtychoData, source: str = "data") -> bool:
    """Whether :func:`probe_prior` estimates the probe from the frames (a blind start:
    the mean-pattern estimate of a localized probe). Half-data reconstructions then
    estimate their own, so that no half starts from the other's frames."""
    return probe_prior_kind(data, source) == "mean_pattern"


def fit_zernike(pupil: np.ndarray, n_terms: int = 15) -> np.ndarray:
    """Least-squares Zernike coefficients (Noll 1..n, radians) of a pupil's phase.

    The disk is the pupil's support (``|P| > 0``), its radius the support's extent; the
    phase is unwrapped inside it first, so aberrations of several waves fit too.
    """
    from skimage.restoration import unwrap_phase

    from ptytasks.physics.zernike import zernike_basis

    support = np.abs(pupil) > 1e-6 * np.abs(pupil).max()
    yy, xx = np.nonzero(support)
    cy, cx = yy.mean(), xx.mean()
    radius = np.sqrt(support.sum() / np.pi)  # the disk's area fixes its radius best
    phase = unwrap_phase(np.ma.masked_array(np.angle(pupil), ~support)).filled(0)
    basis = zernike_basis(pupil.shape, radius, n_terms, center=(cy, cx), dtype=torch.float64)
    a = basis.numpy()[:, support].T
    coef, *_ = np.linalg.lstsq(a, phase[support], rcond=None)
    return coef


def pupil_prior(
    data: PtychoData,
    measured: np.ndarray | None = None,
    *,
    measured_wavelength: float | None = None,
    coefficients: np.ndarray | None = None,
    n_terms: int = 15,
) -> tuple[np.ndarray, np.ndarray]:
    """Fourier-ptychography pupil prior: the NA disc (with the stored defocus) times the
    Zernike fit of a measured pupil, transferred in normalised pupil coordinates.

    Parameters
    ----------
    measured : complex ``(my, mx)`` or None
        A pre-calibrated pupil (e.g. ``blood_aberration.mat``'s ``aberration``).
    measured_wavelength : float
        Its wavelength, metres: the optical path difference is the same, so the phase
        scales by ``measured_wavelength / data.wavelength``.
    coefficients : Noll Zernike coefficients (radians) to use instead of a measured pupil,
        e.g. the calibrated ones applied to one tile's smaller pupil grid.

    Returns
    -------
    pupil : complex64 ``data.frame_shape``, centred
    zernike : float64 ``(n_terms,)`` coefficients in radians at ``data.wavelength``
    """
    from ptytasks.modalities import model_for

    model = model_for(data)
    coef = np.zeros(model.zernike.numel())
    if coefficients is not None:
        c = np.asarray(coefficients, np.float64)
        coef[: min(len(coef), len(c))] = c[: len(coef)]
    elif measured is not None:
        fit = fit_zernike(np.asarray(measured), n_terms)
        fit[0] = 0.0  # piston is a global phase
        scale = (measured_wavelength or data.wavelength) / data.wavelength
        coef[: min(len(coef), len(fit))] = scale * fit[: len(coef)]
    with torch.no_grad():
        model.zernike.copy_(torch.as_tensor(coef, dtype=model.zernike.dtype))
        pupil = model.pupil_function().numpy().astype(np.complex64)
    return pupil, coef


def surface_from_reference(
    reference: PtychoData,
    specimen: np.ndarray | None = None,
    *,
    iterations: int = 50,
    illumination: np.ndarray | None = None,
    momentum: bool = True,
) -> np.ndarray:
    """Calibrate a coded surface from a dataset of a known, weak reference specimen.

    With the specimen and illumination fixed, the wave reaching the surface, ``u_i``, is
    known for every frame; each iteration replaces the predicted amplitudes at the pixels
    by the measured ones, propagates back to the surface plane (``psi_i'``) and solves
    ``S = sum_i conj(u_i) psi_i' / sum_i |u_i|^2`` -- the PIE probe step over all frames at
    once. The result is stored as the surface prior of later runs.

    Parameters
    ----------
    specimen : complex object on ``reference.object_shape`` (default: blank, ones)
    illumination : complex ``frame_shape`` (default: plane wave of the mean counts)
    """
    from ptytasks.physics.models.coded import Coded

    d = reference
    obj = torch.as_tensor(np.ones(d.object_shape, np.complex64) if specimen is None else specimen)
    model = Coded(d.positions_px, d.object_shape, d.frame_shape, wavelength=d.wavelength,
                  distance=float(d.distance), surface_distance=float(d.params["surface_distance"]),
                  pixel_size=d.pixel_size)  # fmt: skip
    illum = torch.as_tensor(
        np.full(d.frame_shape, np.sqrt(np.mean(d.frames)), np.complex64)
        if illumination is None else illumination
    ).to(torch.complex64)  # fmt: skip
    amp = torch.sqrt(torch.as_tensor(np.clip(d.frames, 0, None), dtype=torch.float32))
    idx = torch.arange(d.n_frames)
    with torch.no_grad():
        u = model.propagate_by(model.exit_waves(obj.to(torch.complex64), illum, idx), "distance")
        norm = (u.abs() ** 2).sum(0).clamp_min(1e-12)
        surface = torch.ones(d.frame_shape, dtype=torch.complex64)
        previous = surface
        for k in range(iterations):
            wave = model.propagate_by(surface * u, "surface_distance")
            wave = amp * torch.exp(1j * torch.angle(wave))
            psi = model.propagate_by(wave, "surface_distance", -1)
            new = (u.conj() * psi).sum(0) / norm
            # Nesterov-style momentum: plain error reduction crawls on this problem.
            surface = new + (k / (k + 3)) * (new - previous) if momentum else new
            previous = new
    return previous.numpy().astype(np.complex64)


def object_prior(
    data: PtychoData, probe: np.ndarray | None, kind: str = "uniform", iterations: int = 10,
    learned_weights: str | None = None,
) -> np.ndarray:
    """Object prior on ``data.object_shape``: ones (free space), a short ePIE/rPIE/PINE run, or
    ``"learned"``: single-shot network inversion (:mod:`ptytasks.engines.learned`; far-field
    frames of the trained size, ``iterations`` unused) with ``learned_weights`` (a file or
    a committed preset, :data:`ptytasks.learned.inversion.PRESETS`; None: ``default``)."""
    if kind == "uniform":
        return np.ones(data.object_shape, np.complex64)
    from ptytasks.engines.registry import PRIOR_ENGINES, get, run_engine

    if kind not in PRIOR_ENGINES:
        raise ValueError(f"unknown object prior {kind!r}; use uniform or one of "
                         f"{', '.join(PRIOR_ENGINES)}")  # fmt: skip
    if get(kind).iterative:
        settings = {"epochs": iterations}
    else:  # single-shot networks: the weights are the setting
        settings = {} if learned_weights is None else {"weights": str(learned_weights)}
    res = run_engine(kind, data, settings, probe_prior=probe)
    return np.asarray(res.object, np.complex64)


def tile_weight(data: PtychoData, result: ReconstructionResult) -> np.ndarray:
    """How strongly each object pixel of a tile was illuminated: ``sum_i |P(r - p_i)|^2``
    for scanning modalities, the number of frames seeing a pixel for coded ptychography
    (through the enforced part of a tile's detector crop, tapered: see :func:`_guard_taper`),
    for Fourier ptychography ones, or the guard taper upsampled to the object grid where
    the tile has a guard band (floored at 1e-3 there, so the mosaic keeps the tile's values
    but does not trust them). Stitching trusts a tile where this is large."""
    shape = tuple(result.object.shape[-2:])
    mod = modality_of(data)
    m = data.meta.get("tile_mask")
    if not mod.scanning and m is not None:
        up = shape[0] // m.shape[0]
        taper = np.kron(_guard_taper(m), np.ones((up, up), np.float32))
        if taper.shape != shape:
            raise ValueError(f"tile_mask {m.shape} x {up} does not tile the object {shape}")
        return np.maximum(taper, 1e-3).astype(np.float32)
    if not mod.scanning or result.positions_px is None:
        return np.ones(shape, np.float32)
    # Coded: frames seeing the pixel through enforced detector pixels (a tile's guard band
    # is not, :func:`ptytasks.tiling.tile_dataset`).
    if not mod.localized_probe or result.probe is None:
        w = torch.ones(data.frame_shape) if m is None else torch.as_tensor(_guard_taper(m))
    else:
        p = torch.as_tensor(np.asarray(result.probe))
        w = (p.abs() ** 2).reshape(-1, *p.shape[-2:]).sum(0)
    pos = torch.as_tensor(result.positions_px, dtype=torch.float64)
    cov = insert_patches(w.expand(len(pos), *w.shape), pos, shape, subpixel=False)
    return cov.numpy().astype(np.float32)


def _guard_taper(mask) -> np.ndarray:
    """Float32 weights of a tile's detector crop: 0 in its guard band (``mask``
    False), rising linearly to 1 over the next guard width. Specimen pixels just inside
    the band also send light into it, so they are only partly constrained."""
    from scipy.ndimage import distance_transform_edt

    m = np.asarray(mask, bool)
    if m.all():
        return np.ones(m.shape, np.float32)
    rows = m.any(axis=1)
    g = max(1, int(np.argmax(rows))) if rows.any() else 1
    return np.clip(distance_transform_edt(m) / g, 0.0, 1.0).astype(np.float32)
