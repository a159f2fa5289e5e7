"""Self-calibration RNF scenarios of ``bench/bench_rnf.py``: what the engine learns besides
the object.

``position_correction`` (scan positions from 2 px RMS + 1 % scale errors),
``nearfield_geometry`` (distance and wavelength from 5 % errors, high-NA optical and
paraxial X-ray), ``fourier_pupil`` (Zernike pupil aberrations, scored by
``pupil_rms_error``), ``fourier_bloodsmear`` (the measured FPM blood smear, LED half-split
FRC) and ``coded_few_frames`` (25 frames through a calibrated coded surface). Each
returns measured numbers; the entry point re-exports them all.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from bench.rnf_common import _timed, farfield, illuminated
from ptytasks.engines.position_correction import rms_position_error
from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.metrics import complex_error
from ptytasks.simulate.datasets import simulate


def position_correction(epochs: int = 50, seed: int = 0) -> dict:
    """2 px RMS random errors plus a 1 % scale error; positions learned with a
    coarse-to-fine object field (``anneal_epochs``), compared with fixed positions."""
    data = farfield(seed=seed, position_error_px=2.0, position_scale_error=0.01)
    gt = data.ground_truth
    mask = illuminated(data)
    before = rms_position_error(data.positions_px, gt["positions_px"])
    out = {"rms_before_px": before}
    for learn in (True, False):
        opts = RNFOptions(
            epochs=epochs,
            batch_size=8,
            lr=3e-3,
            learn_positions=learn,
            anneal_epochs=20 if learn else 0,
            lr_decay=0.1,
            seed=seed,
        )
        r, t = _timed(lambda o=opts: reconstruct_rnf(data, o, probe_prior=gt["probe"]))
        key = "learned" if learn else "fixed"
        out[key] = {
            "complex_error": complex_error(r.object, gt["object"], mask),
            "rms_px": rms_position_error(r.positions_px, gt["positions_px"]),
            "seconds": t,
        }
    out["rms_reduction"] = before / out["learned"]["rms_px"]
    return out


def _nearfield_optical(wavelength_error, distance_error, seed=0):
    """Lensless optical near field at high NA: 532 nm, 0.4 um pixels (lambda / 2 px =
    0.67), 50 um propagation, a diffuser probe with 2 px features."""
    return simulate(
        "nearfield",
        frame_size=48,
        n_positions=16,
        overlap=0.85,
        energy_ev=1.239841984e-6 / 532e-9,
        z1=1.0,
        z2=50e-6,
        detector_pixel=0.4e-6,
        diffuser_distance=20e-6,
        diffuser_feature_px=2.0,
        known_probe=True,
        wavelength_error=wavelength_error,
        distance_error=distance_error,
        seed=seed,
    )


def nearfield_geometry(epochs: int = 40, seed: int = 0) -> dict:
    """Distance and wavelength both learned from 5 % errors.

    High NA (optical, angular spectrum far from paraxial): each is identifiable. Two starts:
    both +5 % (product 10 % off) and -5 % / +5 % (product right, split wrong: only the
    non-paraxial term can fix it). Paraxial (8 keV X-rays, Fresnel number 0.006 per
    pixel): only ``lambda z`` is determined; its recovery is reported, and the individual
    values, which the data do not fix, too (they wander with gradient noise: the angular
    spectrum's split term ``lambda^3 z f^4`` is ~1e-7 of the Fresnel term there, ~0.1 in
    the optical case). Physics note: ``docs/conventions.md``, "Learned geometry".
    """
    out = {}
    cases = {"optical_both_plus": (0.05, 0.05), "optical_opposite": (-0.05, 0.05)}
    for name, (dl, dz) in cases.items():
        data = _nearfield_optical(dl, dz, seed)
        out[name] = _geometry_run(data, epochs, seed)
    xray = simulate(
        "nearfield",
        frame_size=48,
        n_positions=16,
        overlap=0.85,
        known_probe=True,
        diffuser_feature_px=2.0,
        wavelength_error=0.05,
        distance_error=0.05,
        seed=seed,
    )
    out["xray_paraxial"] = _geometry_run(xray, epochs, seed)
    return out


def _geometry_run(data, epochs, seed):
    """Learn distance and wavelength (relative rate 3e-3, cosine decay to 0.1x: the
    Fresnel product settles in ~8 epochs, the weak non-paraxial split in ~30)."""
    gt = data.ground_truth
    opts = RNFOptions(
        epochs=epochs,
        batch_size=4,
        lr=3e-3,
        lr_distance=3e-3,
        lr_wavelength=3e-3,
        lr_decay=0.1,
        mu=0.0,
        learn_probe=False,
        learn_distance=True,
        learn_wavelength=True,
        seed=seed,
    )
    r, t = _timed(lambda: reconstruct_rnf(data, opts))
    z, lam = r.params["distance"], r.params["wavelength"]
    zt, lt = float(gt["distance"]), float(gt["wavelength"])
    return {
        "start_distance_error": data.distance / zt - 1,
        "start_wavelength_error": data.wavelength / lt - 1,
        "distance_error": z / zt - 1,
        "wavelength_error": lam / lt - 1,
        "product_error": z * lam / (zt * lt) - 1,
        "lambda_over_2px": lt / (2 * data.pixel_size),
        "complex_error": complex_error(r.object, gt["object"], illuminated(data)),
        "seconds": t,
    }


def pupil_rms_error(pupil, truth) -> float:
    """RMS phase difference (rad) over the aperture after removing piston and tilt (the
    tilt is a shift of the image, not an aberration)."""
    ap = np.abs(truth) > 0
    dphi = np.angle(pupil * np.conj(truth))[ap]
    yy, xx = np.nonzero(ap)
    a = np.stack([np.ones_like(dphi), yy, xx], 1).astype(float)
    c, *_ = np.linalg.lstsq(a, dphi, rcond=None)
    return float(np.sqrt(np.mean((dphi - a @ c) ** 2)))


def fourier_pupil(epochs: int = 40, seed: int = 0) -> dict:
    """FP with defocus (Z4 1 rad), astigmatism (Z5 0.5, Z6 -0.4) and coma (Z7 0.3,
    Z8 -0.3): 69 LEDs, 32 px images, 4x upsampling; 15 Zernike terms learned."""
    ab = {4: 1.0, 5: 0.5, 6: -0.4, 7: 0.3, 8: -0.3}
    data = simulate("fourier", image_size=32, upsample=4, aberrations=ab, seed=seed)
    gt = data.ground_truth
    opts = RNFOptions(
        epochs=epochs,
        batch_size=4,
        lr=3e-3,
        mu=0.0,
        learn_probe=False,
        learn_zernike=True,
        seed=seed,
    )
    r, t = _timed(lambda: reconstruct_rnf(data, opts))
    flat = np.abs(gt["pupil"]).astype(np.complex64)
    return {
        "pupil_rms_error_rad": pupil_rms_error(r.pupil, gt["pupil"]),
        "aberration_rms_rad": pupil_rms_error(flat, gt["pupil"]),
        "zernike": r.params["zernike"][:8],
        "zernike_true": list(gt["zernike"][:8]),
        "complex_error": complex_error(r.object, gt["object"]),
        "seconds": t,
    }


def fourier_bloodsmear(path, *, crop: int = 48, epochs: int = 15, seed: int = 0) -> dict:
    """The measured FPM blood smear (green): a centred ``crop`` of every LED image, 4x
    upsampling. The LEDs are split into two interleaved halves (checkerboard of the LED
    grid), each half reconstructed alone by RNF and by ptyflow's Fourier rPIE (same epochs,
    the pupil updated; with its default fractional LED windows and with whole-pixel ones,
    ``FourierPIEOptions.subpixel=False``, the option for measured data); the standard
    half-data FRC of the two complex objects
    (:func:`ptytasks.evaluation.half_data_frc`: aligned, means removed, soft-edged; first
    half-bit crossing after the low-frequency region, searched up to the band limit both
    halves measured, as the pipeline's evaluation does) is reported for each.

    RNF settings for measured optical data (paper, Methods): the gradient-domain data loss
    (blind to the smooth background and per-LED level variations of real images), and each
    half learns the LED wavevectors and the per-LED intensity factors with the Zernike
    pupil (LED positions and brightness are never known exactly).

    For reading the numbers: the objective passes object frequencies up to ``NA / lambda``
    (``brightfield_cutoff_cyc_px``), the LEDs synthesise ``(NA + NA_illum) / lambda`` at
    the corner LEDs (``synthetic_cutoff_cyc_px``) and ``band_limit_cyc_px`` in every
    direction (the largest centred disc inside the union of the LEDs' pupils:
    :meth:`ptytasks.modalities.base.Modality.band_limit`). Both halves are low-passed to
    the band limit and no crossing is searched above it: content beyond what any LED
    measured agrees between halves as a deterministic function of what they did measure
    (without the limit RNF's halves correlated 0.6-0.8 up to Nyquist, ``frc_*_unbanded``).
    A result equal to the band limit is a bound (``*_crossed`` False). The upsampled
    centre-LED images' own FRC (``frc_centre_led``) is shown for orientation only; the
    comparison is with Fourier rPIE.

    ``heldout_error_*``: how well each half's object and pupil predict the other half's
    dark-field images (:func:`heldout_led_error`), for RNF, both rPIE variants and the
    centre-LED prior (with the NA's aperture): a check that, unlike the FRC here, tells a
    reconstruction from its prior.
    """
    from ptytasks.data import PtychoData
    from ptytasks.engines.fourier_pie import reconstruct_fourier_pie
    from ptytasks.engines.options import FourierPIEOptions
    from ptytasks.evaluation import half_data_band_limit, half_data_frc
    from ptytasks.modalities import modality_of
    from storage.readers import read_any

    full = read_any(path)
    n = full.frame_shape[0]
    lo = (n - crop) // 2
    up = int(full.params.get("upsample", 4))
    frames = full.frames[:, lo : lo + crop, lo : lo + crop]
    base = PtychoData(
        modality="fourier",
        frames=frames,
        wavelength=full.wavelength,
        pixel_size=full.pixel_size,
        object_shape=(crop * up, crop * up),
        wavevectors=full.wavevectors,
        distance=full.distance,
        detector_pixel=full.detector_pixel,
        params=dict(full.params),
    )
    # the pipeline's halves: a checkerboard of the 15 x 15 LED board
    halves = modality_of(base).half_split(base)
    opts = RNFOptions(
        epochs=epochs,
        batch_size=8,
        lr=3e-3,
        mu=0.1,
        loss="gradient",
        learn_probe=False,
        learn_zernike=True,
        learn_positions=True,
        learn_intensity=True,
        lr_decay=0.1,
        seed=seed,
    )
    recons, pies, whole, brights, pupils = [], [], [], [], {"rnf": [], "rpie": [], "whole": []}
    t0 = time.perf_counter()
    for i, h in enumerate(halves):
        d = base.subset(h)
        # independent halves: each from its own seed (one seed gave both RNF halves the
        # same start, and their FRC ran to Nyquist, above the synthetic band limit)
        s = seed + 1000 * (i + 1)
        rnf = reconstruct_rnf(d, dataclasses.replace(opts, seed=s))
        pie = reconstruct_fourier_pie(d, FourierPIEOptions(iterations=epochs, seed=s))
        # whole-pixel LED windows, the option for measured data (FourierPIEOptions.subpixel)
        wp = reconstruct_fourier_pie(d, FourierPIEOptions(iterations=epochs, seed=s,
                                                          subpixel=False))  # fmt: skip
        for key, r, store in (("rnf", rnf, recons), ("rpie", pie, pies), ("whole", wp, whole)):
            store.append(r.object)
            pupils[key].append(r.pupil)
        k = np.asarray(d.wavevectors)
        c = int(np.argmin((k**2).sum(1)))
        img = torch.as_tensor(np.sqrt(np.clip(d.frames[c], 0, None)))[None, None]
        brights.append(
            torch.nn.functional.interpolate(
                img, scale_factor=up, mode="bicubic", align_corners=False
            )[0, 0].numpy()
        )
    seconds = time.perf_counter() - t0

    # the border (a quarter-frame at 4x) holds the Fourier-interpolation wrap-around
    inner = np.zeros(base.object_shape, bool)
    m = base.object_shape[0] // 16
    inner[m:-m, m:-m] = True

    band = half_data_band_limit(base, halves)

    def res(a, b, limit=band):
        return half_data_frc(np.asarray(a, np.complex128), np.asarray(b, np.complex128),
                             inner, band_limit=limit).resolution("halfbit")

    r_rnf, r_pie, r_bright = res(*recons), res(*pies), res(*brights)
    r_whole = res(*whole)
    # Held-out LEDs: each half's reconstruction predicts the other half's images
    held = [base.subset(h) for h in halves]
    flat = [None, None]  # the prior: the NA's aperture, no aberration

    def predicts(objs, pups):
        return float(np.mean([heldout_led_error(objs[i], pups[i], held[1 - i], inner)
                              for i in (0, 1)]))  # fmt: skip

    na = float(full.params["na"])
    na_illum = float(np.sqrt((np.asarray(full.wavevectors) ** 2).sum(1)).max()) * full.wavelength
    synthetic = (na + na_illum) / full.wavelength * base.pixel_size
    return {
        "crop": crop,
        "upsample": up,
        "leds_per_half": [len(h) for h in halves],
        "frc_rnf": r_rnf.freq,
        "frc_rnf_crossed": r_rnf.crossed,
        "frc_fourier_rpie": r_pie.freq,
        "frc_fourier_rpie_crossed": r_pie.crossed,
        "frc_fourier_rpie_whole_pixel": r_whole.freq,
        "frc_fourier_rpie_whole_pixel_crossed": r_whole.crossed,
        "frc_centre_led": r_bright.freq,
        "heldout_error_rnf": predicts(recons, pupils["rnf"]),
        "heldout_error_fourier_rpie": predicts(pies, pupils["rpie"]),
        "heldout_error_fourier_rpie_whole_pixel": predicts(whole, pupils["whole"]),
        "heldout_error_centre_led": predicts(brights, flat),
        "frc_rnf_unbanded": res(*recons, limit=None).freq,
        "frc_fourier_rpie_unbanded": res(*pies, limit=None).freq,
        "brightfield_cutoff_cyc_px": na / full.wavelength * base.pixel_size,
        "synthetic_cutoff_cyc_px": synthetic,
        "band_limit_cyc_px": band,
        "centre_led_nyquist_cyc_px": 0.5 / up,
        "epochs": epochs,
        "pixel_size_m": base.pixel_size,
        "seconds": seconds,
    }


def heldout_led_error(obj, pupil, held, mask) -> float:
    """How well an object (and pupil) reconstructed from some LEDs predicts the dark-field
    images of LEDs it never saw (``held``, nominal wavevectors; illumination NA above the
    objective's, so each image holds only object frequencies beyond the bright field):
    the median over those images of the relative amplitude misfit
    ``sqrt(sum (a sqrt(I) - sqrt(J))^2 / sum J)``, each image scaled by its least-squares
    factor ``a`` (LED brightness and the object's scale are not compared), over the image
    pixels inside the object ``mask`` (the object's border holds the wrap-around).
    ``pupil`` None: the NA's aperture."""
    from ptytasks.modalities import model_for

    model = model_for(held, dtype=torch.float64)
    k = np.sqrt((np.asarray(held.wavevectors, float) ** 2).sum(1)) * float(held.wavelength)
    idx = torch.as_tensor(np.flatnonzero(k > float(held.params["na"])))
    with torch.no_grad():
        o = torch.as_tensor(np.asarray(obj, np.complex128))
        p = None if pupil is None else torch.as_tensor(np.asarray(pupil, np.complex128))
        a = model.to_detector(model.exit_waves(o, None, idx), idx, pupil=p).abs().numpy()
    up = mask.shape[0] // a.shape[1]
    m = mask[::up, ::up][None]
    j = np.sqrt(np.clip(np.asarray(held.frames, float)[idx.numpy()], 0, None)) * m
    a = a * m
    scale = (a * j).sum((1, 2)) / np.maximum((a * a).sum((1, 2)), 1e-30)
    misfit = ((scale[:, None, None] * a - j) ** 2).sum((1, 2)) / (j**2).sum((1, 2))
    return float(np.median(np.sqrt(misfit)))


def coded_few_frames(epochs: int = 40, seed: int = 0) -> dict:
    """Coded ptychography, 25 frames, calibrated surface (``meta["surface"]``)."""
    data = simulate("coded", frame_size=48, n_positions=25, seed=seed)
    gt = data.ground_truth
    mask = illuminated(data, 0.5)
    opts = RNFOptions(epochs=epochs, batch_size=5, learn_probe=False, seed=seed)
    r, t = _timed(lambda: reconstruct_rnf(data, opts))
    return {
        "n_frames": data.n_frames,
        "complex_error": complex_error(r.object, gt["object"], mask),
        "prior_error": complex_error(np.ones_like(gt["object"]), gt["object"], mask),
        "seconds": t,
    }
