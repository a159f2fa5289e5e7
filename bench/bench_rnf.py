"""Acceptance scenarios and benchmarks of the residual neural-field engine (RNF).

Every scenario simulates a small dataset, reconstructs it and returns measured numbers
(nothing is hard-coded); ``tests/engines/test_rnf_acceptance.py`` runs the same functions
and asserts the acceptance thresholds. Scenarios:

``residual``     far field, zone-plate probe with ~3 phase wraps: residual vs ab initio
``sparse``       50 % / 25 % of a 70 %-overlap scan at low dose: RNF vs tuned ePIE / rPIE
``positions``    2 px RMS random + 1 % scale position errors, learned positions
``nearfield``    distance and wavelength 5 % wrong (high-NA optical; paraxial X-ray)
``fourier``      pupil with defocus, astigmatism and coma via learned Zernike terms
``fpm_real``     the measured blood-smear FPM set (``../shared/data``), LED half-split FRC
``coded``        25 frames with a calibrated coded surface
``raster``       strict raster, blind probe: error power at the scan frequency, RNF vs ePIE
``activations``  phasor vs complex tanh, CReLU, zReLU, modReLU, modulus ReLU (+ split MLP)
``throughput``   frames per second of a full epoch (``--device cuda`` on a GPU)

Usage::

    python bench/bench_rnf.py                       # all, CPU; bench/results/rnf-*.json
    python bench/bench_rnf.py --only raster coded   # a subset
    python bench/bench_rnf.py --only throughput --device cuda

Results go to ``bench/results/rnf-<scenario>.json`` (with the machine description) and a
summary table ``bench/results/rnf.md``. Timings are wall clock on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptytasks.engines.options import PIEOptions  # noqa: E402
from ptytasks.engines.pie import reconstruct_pie  # noqa: E402
from ptytasks.engines.position_correction import rms_position_error  # noqa: E402
from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf  # noqa: E402
from ptytasks.metrics import align, complex_error, frc, quality_report  # noqa: E402
from ptytasks.metrics.frc import taper_mask  # noqa: E402
from ptytasks.physics.probes import zone_plate_probe  # noqa: E402
from ptytasks.physics.shifts import coverage  # noqa: E402
from ptytasks.simulate.datasets import simulate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ACTIVATIONS = ("phasor", "ctanh", "crelu", "zrelu", "modrelu", "modulus_relu", "split_relu")


# ---------------------------------------------------------------------------- helpers
def illuminated(data, frac: float = 0.1, indices=None) -> np.ndarray:
    """Object pixels covered by more than ``frac`` of the peak TRUE illumination."""
    gt = data.ground_truth
    pos = gt["positions_px"] if indices is None else gt["positions_px"][indices]
    w = torch.as_tensor(np.abs(gt["probe"]) ** 2, dtype=torch.float64)
    c = coverage(torch.as_tensor(pos), data.frame_shape, data.object_shape, w).numpy()
    return c > frac * c.max()


def farfield(n_positions=49, *, frame=48, diameter=24.0, seed=0, **kw):
    """The far-field set of the scenarios: 48 px frames, a zone plate of 24 px footprint
    (about three phase wraps across it), 70 % overlap."""
    kw.setdefault("overlap", 0.7)
    kw.setdefault("scan", "fermat")
    return simulate(
        "farfield",
        frame_size=frame,
        n_positions=n_positions,
        probe_diameter_px=diameter,
        seed=seed,
        **kw,
    )


def zone_plate_prior(data, defocus_error: float = 0.05) -> np.ndarray:
    """The zone-plate probe the simulator used, but at a ``defocus_error`` wrong defocus
    (a probe "estimated from the defocus", the paper's prior), at the true flux."""
    gt = data.ground_truth
    n = data.frame_shape[0]
    px, lam = float(gt["pixel_size"]), float(gt["wavelength"])
    d_fzp, dr = 100e-6, 1.25 * px
    f = d_fzp * dr / lam
    dz = data.meta["probe_diameter_px"] * px * f / d_fzp
    p = zone_plate_probe((n, n), px, lam, d_fzp, dr, defocus=dz * (1 + defocus_error)).numpy()
    return p * math.sqrt(data.meta["flux_per_frame"])


def phase_wraps(probe: np.ndarray, frac: float = 0.2) -> float:
    """Unwrapped phase range across the probe footprint (|P| > frac max), in turns."""
    from skimage.restoration import unwrap_phase

    m = np.abs(probe) > frac * np.abs(probe).max()
    ph = unwrap_phase(np.angle(probe))
    return float((ph[m].max() - ph[m].min()) / (2 * np.pi))


def scores(obj, truth, mask) -> dict:
    """Complex error and FRC resolution (0.5 threshold against the truth, cycles/px)."""
    q = quality_report(obj, truth, mask, threshold=0.5)
    return {"complex_error": q["complex_error"], "frc_resolution": q["frc_resolution"]}


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


# ---------------------------------------------------------------------------- scenarios
def residual_vs_nonresidual(epochs: int = 40, batch_size: int = 8, seed: int = 0) -> dict:
    """Residual vs ab-initio fields; same data, options and probe prior."""
    data = farfield(seed=seed)
    prior = zone_plate_prior(data)
    gt = data.ground_truth
    mask = illuminated(data)
    out = {
        "probe_phase_wraps": phase_wraps(gt["probe"]),
        "prior_probe_error": complex_error(prior, gt["probe"], np.abs(gt["probe"]) > 0),
    }
    for residual in (True, False):
        opts = RNFOptions(epochs=epochs, batch_size=batch_size, residual=residual, seed=seed)
        res, t = _timed(lambda o=opts: reconstruct_rnf(data, o, probe_prior=prior))
        key = "residual" if residual else "non_residual"
        out[key] = {"complex_error": complex_error(res.object, gt["object"], mask), "seconds": t}
    out["ratio"] = out["non_residual"]["complex_error"] / out["residual"]["complex_error"]
    return out


def sparse_data(
    fractions=(0.5, 0.25), *, dose: float = 1e4, epochs: int = 60, mu: float = 0.3,
    seed: int = 0,
) -> dict:
    """Keep a random 50 % / 25 % of a 70 %-overlap scan (64 positions, Poisson noise at
    ``dose`` photons per frame, about 4 photons per detector pixel).

    Same probe prior (the zone plate at a 5 % wrong defocus), uniform object and the same
    positions for every engine. ePIE and rPIE get a grid of object steps ``alpha`` (probe
    step 1), with probe updates from the first epoch or from epoch ``epochs // 2`` (the
    same delay RNF uses), and are scored after 10, 30, 100 and 300 epochs; each reports
    the grid point with the lowest complex error (chosen on the ground truth: tuned
    generously) and, separately, the best FRC resolution reached anywhere on its grid
    (``best_frc``), which is what RNF must beat. RNF runs one fixed setting for both
    fractions: the paper's architecture, AdamW at 3e-3, the amplitude L2 data term (one
    of the paper's options; at a few photons per pixel the default L1, a median fit, is
    biased towards zero in the dim outer pixels and loses the high frequencies, where L2
    in the amplitude domain is the variance-stabilised Gaussian approximation of the
    Poisson likelihood), the probe field frozen for the first half (``probe_warmup_epochs``, PIE's
    ``probe_update_start``) and wavelet weight ``mu``. ``mu`` weighs the sparsity term
    against the data term, whose scale depends on the loss and on the engine's frame
    normalisation: measured on this set (seed 0), the paper's 0.1 gave errors 0.149 /
    0.224 and FRC 0.372 / 0.301 (50 % / 25 %), 0.3 gives 0.144 / 0.185 and 0.458 / 0.373.
    """
    from ptytasks.subsample import keep_fraction

    full = farfield(64, seed=seed, dose=dose)
    gt = full.ground_truth
    prior = zone_plate_prior(full)
    probe_mask = np.abs(gt["probe"]) > 0.05 * np.abs(gt["probe"]).max()
    probe_start = epochs // 2
    grids = {  # (alpha, beta, probe_update_start)
        v: [(a, 1.0, s) for a in alphas for s in (0, probe_start)]
        for v, alphas in (("epie", (1.0, 0.5, 0.25)), ("rpie", (0.5, 0.25, 0.1)))
    }
    checkpoints = (10, 30, 100, 300)
    out = {"dose": dose, "n_positions": full.n_frames,
           "prior_probe_error": complex_error(prior, gt["probe"], probe_mask)}
    for frac in fractions:
        keep = keep_fraction(full.n_frames, frac, seed=seed)
        data = full.subset(keep)
        mask = illuminated(full, 0.1, keep)
        row = {"n_frames": data.n_frames}
        for variant, grid in grids.items():
            best, best_frc, t0 = None, 0.0, time.perf_counter()
            for alpha, beta, start in grid:
                seen = {}

                def cb(epoch, info, seen=seen, mask=mask):
                    if epoch + 1 in checkpoints:
                        seen[epoch + 1] = scores(info["object"].cpu().numpy(), gt["object"],
                                                 mask)

                o = PIEOptions(variant=variant, iterations=max(checkpoints), alpha=alpha,
                               beta=beta, probe_update_start=start, seed=seed)
                reconstruct_pie(data, o, probe_init=prior, callback=cb)
                for it, s in seen.items():
                    best_frc = max(best_frc, s["frc_resolution"])
                    if best is None or s["complex_error"] < best["complex_error"]:
                        best = {**s, "alpha": alpha, "beta": beta,
                                "probe_update_start": start, "iterations": it}
            row[variant] = {**best, "best_frc": best_frc,
                            "grid_seconds": time.perf_counter() - t0}
        opts = RNFOptions(epochs=epochs, batch_size=4, lr=3e-3, mu=mu, loss="l2",
                          probe_warmup_epochs=probe_start, seed=seed)
        r, t = _timed(lambda o=opts, d=data: reconstruct_rnf(d, o, probe_prior=prior))
        row["rnf"] = {**scores(r.object, gt["object"], mask),
                      "probe_error": complex_error(r.probe, gt["probe"], probe_mask),
                      "seconds": t}
        best_pie = min(row["epie"]["complex_error"], row["rpie"]["complex_error"])
        best_frc = max(row["epie"]["best_frc"], row["rpie"]["best_frc"])
        row["margin_error"] = best_pie / row["rnf"]["complex_error"]
        row["margin_frc"] = row["rnf"]["frc_resolution"] / best_frc
        out[f"keep_{int(round(frac * 100))}"] = row
    return out


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
    grid), each half reconstructed alone; the FRC of the two amplitude images (half-bit)
    is compared with the FRC of the two halves' most central LED images, upsampled.

    Settings for measured optical data (paper, Methods): the gradient-domain data loss
    (blind to the smooth background and per-LED level variations of real images; with the
    plain L1 amplitude loss the halves disagree beyond the bright-field band, FRC ~0.1
    cycles/px), and each half learns the LED wavevectors and the per-LED intensity factors
    with the Zernike pupil (LED positions and brightness are never known exactly).

    For reading the numbers: the objective passes object frequencies up to ``NA / lambda``
    (``brightfield_cutoff_cyc_px``), the LEDs synthesise ``(NA + NA_illum) / lambda``
    (``synthetic_cutoff_cyc_px``); the centre-LED image holds nothing real beyond its own
    Nyquist ``0.5 / upsample``, and bicubic upsampling puts correlated replicas of its
    content above that, which the FRC counts as agreement. ``*_capped`` are the FRC
    resolutions limited to what each image can physically contain (the RNF images: the
    synthetic cutoff, above which both halves keep their priors' interpolated content).
    """
    from ptytasks.data import PtychoData
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
    # checkerboard halves of the 15 x 15 LED grid (by LED position)
    xy = np.asarray(full.meta["led_xy"])
    grid = np.round((xy - xy.min(0)) / 4e-3).astype(int)
    halves = [np.flatnonzero((grid.sum(1) % 2) == h) for h in (0, 1)]
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
    recons, brights = [], []
    t0 = time.perf_counter()
    for h in halves:
        d = base.subset(h)
        r = reconstruct_rnf(d, opts)
        recons.append(np.abs(r.object))
        k = np.asarray(d.wavevectors)
        c = int(np.argmin((k**2).sum(1)))
        img = torch.as_tensor(np.sqrt(np.clip(d.frames[c], 0, None)))[None, None]
        brights.append(
            torch.nn.functional.interpolate(
                img, scale_factor=up, mode="bicubic", align_corners=False
            )[0, 0].numpy()
        )
    seconds = time.perf_counter() - t0

    def res(a, b):
        b = align(b, a, shift=True, ramp=False)[0].real
        return frc(a, b, window="hann").resolution("halfbit").freq

    r_rnf, r_bright = res(*recons), res(*brights)
    na = float(full.params["na"])
    na_illum = float(np.sqrt((np.asarray(full.wavevectors) ** 2).sum(1)).max()) * full.wavelength
    synthetic = (na + na_illum) / full.wavelength * base.pixel_size
    return {
        "crop": crop,
        "upsample": up,
        "leds_per_half": [len(h) for h in halves],
        "frc_rnf": r_rnf,
        "frc_centre_led": r_bright,
        "sharpening": r_rnf / r_bright,
        "frc_rnf_capped": min(r_rnf, synthetic),
        "frc_centre_led_capped": min(r_bright, 0.5 / up),
        "brightfield_cutoff_cyc_px": na / full.wavelength * base.pixel_size,
        "synthetic_cutoff_cyc_px": synthetic,
        "centre_led_nyquist_cyc_px": 0.5 / up,
        "epochs": epochs,
        "pixel_size_m": base.pixel_size,
        "seconds": seconds,
    }


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


def periodic_error(obj, truth, mask, step: tuple[float, float], harmonics: int = 2) -> dict:
    """Error power at the raster frequencies ``(k / step_y, l / step_x)`` (``|k|, |l| <=
    harmonics``, not both 0; 3x3 bins around each) against the whole error power.

    The reconstruction is aligned to the truth first; the error is tapered to the mask.
    """
    al, _ = align(obj, truth, mask)
    e = (al - truth) * taper_mask(mask, 6)
    p = np.abs(np.fft.fft2(e)) ** 2
    h, w = p.shape
    sel = np.zeros_like(p, dtype=bool)
    for ky in range(-harmonics, harmonics + 1):
        for kx in range(-harmonics, harmonics + 1):
            if ky == 0 and kx == 0:
                continue
            iy, ix = int(round(ky * h / step[0])), int(round(kx * w / step[1]))
            for a in (-1, 0, 1):
                for b in (-1, 0, 1):
                    sel[(iy + a) % h, (ix + b) % w] = True
    return {
        "periodic_power": float(p[sel].sum() / p.size),
        "periodic_fraction": float(p[sel].sum() / p.sum()),
    }


def raster_pathology(epochs: int = 150, seed: int = 0) -> dict:
    """Strict 7 x 7 raster, Gaussian probe recovered blind: every engine starts from the
    same back-propagated mean frame (:func:`~ptytasks.engines.rnf.default_probe`) and a
    uniform object. Error power at the scan frequency and its harmonics, RNF vs ePIE
    (and rPIE).

    ePIE runs with object steps 1 and 0.5 and is scored after 30, 100 and 300 epochs;
    the lowest periodic power of those six (``epie``; all in ``epie_grid``) is the one
    compared, so ePIE is not caught at an early, still-unconverged epoch. rPIE (step
    0.1) is reported likewise.
    """
    from ptytasks.engines.rnf import default_probe, model_for

    data = farfield(49, seed=seed, scan="raster", probe="gaussian")
    gt = data.ground_truth
    mask = illuminated(data, 0.3)
    pos = gt["positions_px"]
    step = tuple(float(np.median(np.diff(np.unique(np.round(pos[:, a], 3))))) for a in (0, 1))
    p0 = default_probe(data, model_for(data)).numpy()
    out = {"step_px": step}
    checkpoints = (30, 100, 300)

    def score(obj):
        return {**periodic_error(obj, gt["object"], mask, step),
                "complex_error": complex_error(obj, gt["object"], mask)}

    for variant, alphas in (("epie", (1.0, 0.5)), ("rpie", (0.1,))):
        grid, t0 = [], time.perf_counter()
        for alpha in alphas:
            def cb(epoch, info, alpha=alpha, grid=grid):
                if epoch + 1 in checkpoints:
                    grid.append({**score(info["object"].cpu().numpy()), "alpha": alpha,
                                 "iterations": epoch + 1})

            o = PIEOptions(variant=variant, iterations=max(checkpoints), alpha=alpha,
                           seed=seed)
            reconstruct_pie(data, o, probe_init=p0, callback=cb)
        best = min(grid, key=lambda g: g["periodic_power"])
        out[variant] = {**best, "seconds": time.perf_counter() - t0}
        out[f"{variant}_grid"] = grid
    rnf_opts = RNFOptions(epochs=epochs, batch_size=4, lr=3e-3, lr_decay=0.1, seed=seed)
    r, t = _timed(lambda: reconstruct_rnf(data, rnf_opts, probe_prior=p0))
    out["rnf"] = {**score(r.object), "seconds": t}
    out["ratio_epie_over_rnf"] = out["epie"]["periodic_power"] / out["rnf"]["periodic_power"]
    return out


def activation_ablation(epochs: int = 30, lrs=(1e-3, 3e-3), seed: int = 0) -> dict:
    """Same far-field problem (residual, probe prior, noise-free) for each activation.

    Every activation runs with the same settings at each learning rate in ``lrs``: the
    paper's 1e-3 (the row's main numbers) and 3e-3 (``lr_3e-03``), because the ranking
    depends on it (measured: the phasor, whose frequency scales every step of the first
    layer, degrades at the larger rate; the others change little or improve).
    """
    data = farfield(seed=seed)
    prior = zone_plate_prior(data)
    gt = data.ground_truth
    mask = illuminated(data)
    out = {}
    for act in ACTIVATIONS:
        row = {}
        for i, lr in enumerate(lrs):
            opts = RNFOptions(epochs=epochs, batch_size=8, lr=lr, activation=act, seed=seed)
            r, t = _timed(lambda o=opts: reconstruct_rnf(data, o, probe_prior=prior))
            res = {**scores(r.object, gt["object"], mask), "final_loss": r.final_loss,
                   "seconds": t, "lr": lr}
            if i == 0:
                row.update(res)
            else:
                row[f"lr_{lr:.0e}"] = res
        out[act] = row
    return out


@contextlib.contextmanager
def reference_kernels():
    """The RNF kernels as they were before the CPU speed work (issue #7), for before/after
    ratios measured in the same process: layer-by-layer autograd MLP
    (``MLPConfig.fused=False``), 16384-point CPU chunks, ``foreach`` AdamW."""
    import ptytasks.fields.residual_field as rf
    from ptytasks.fields.complex_layers import ComplexMLP

    chunk, fwd, adamw = rf.CPU_CHUNK, ComplexMLP.forward_split, torch.optim.AdamW

    def forward_split(self, feats, chunk_size=None, checkpoint=False):
        fused = self.config.fused
        object.__setattr__(self.config, "fused", False)
        try:
            return fwd(self, feats, chunk_size, checkpoint)
        finally:
            object.__setattr__(self.config, "fused", fused)

    class ForeachAdamW(adamw):
        def __init__(self, *args, fused=None, **kw):
            kw["foreach"] = True
            super().__init__(*args, **kw)

    rf.CPU_CHUNK, ComplexMLP.forward_split, torch.optim.AdamW = 16384, forward_split, ForeachAdamW
    try:
        yield
    finally:
        rf.CPU_CHUNK, ComplexMLP.forward_split, torch.optim.AdamW = chunk, fwd, adamw


def fft_floor(n_frames: int, shape, device: str = "cpu", reps: int = 7) -> float:
    """Seconds of one ``fft2`` + ``ifft2`` over all frames (complex64, batched; best of reps)."""
    x = torch.randn(n_frames, *shape, dtype=torch.complex64, device=device)
    ts = []
    for _ in range(reps + 1):
        _sync(device)
        t = time.perf_counter()
        torch.fft.ifft2(torch.fft.fft2(x))
        _sync(device)
        ts.append(time.perf_counter() - t)
    return min(ts[1:])


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _run_epochs(data, opts) -> dict:
    """Reconstruct; per-epoch wall (engine timer) and process-CPU seconds, first epoch
    (warm-up) dropped. CPU seconds count all of the process's threads; on a shared
    machine they are the steadier measure of the work done."""
    marks = [time.process_time()]

    def cb(epoch, info):
        marks.append(time.process_time())

    r = reconstruct_rnf(data, opts, callback=cb)
    wall = r.extras["epoch_seconds"]
    cpu = list(np.diff(marks))  # first entry includes the setup: dropped below
    wall, cpu = (wall[1:], cpu[1:]) if len(wall) > 1 else (wall, cpu)
    return {"epoch_wall_s": float(np.median(wall)), "epoch_cpu_s": float(np.median(cpu)),
            "frames_per_s": data.n_frames / float(np.median(wall)),
            "frames_per_cpu_s": data.n_frames / float(np.median(cpu)),
            "final_loss": float(r.loss_history[-1])}


def throughput(
    device: str = "cpu",
    *,
    frame: int = 64,
    n_positions: int = 100,
    configs=((4, "auto", "cap"), (16, "auto", "cap"), (16, "full", "cap"),
             (16, "auto", "paper")),
    epochs: int = 3,
    compare: bool = True,
) -> dict:
    """Frames per second of full RNF epochs (far field, 64 px frames, 169 px object).

    ``configs``: (batch size, ``eval_region``, hash ``level_policy``). With ``compare`` each
    configuration also runs under :func:`reference_kernels` right before the current code
    (same data, options and seed, interleaved), and ``speedup`` is the ratio of median
    epoch times (wall and CPU). ``x_fft_floor``: epoch time over one batched FFT pair of
    all frames (``bench/suite_speed.py``'s floor).
    """
    data = simulate("farfield", frame_size=frame, n_positions=n_positions, seed=0)
    floor = fft_floor(data.n_frames, data.frame_shape, device)
    out = {
        "device": device,
        "threads": torch.get_num_threads(),
        "frame": frame,
        "n_frames": data.n_frames,
        "object_shape": list(data.object_shape),
        "epochs": epochs,
        "fft_floor_s": floor,
        "loadavg_start": list(os.getloadavg()),
    }
    for bs, region, policy in configs:
        opts = RNFOptions(epochs=epochs, batch_size=bs, eval_region=region, device=device,
                          encoding={"level_policy": policy})
        row = {}
        if compare:
            with reference_kernels():
                row["reference"] = _run_epochs(data, opts)
        row.update(_run_epochs(data, opts))
        row["x_fft_floor"] = row["epoch_wall_s"] / floor
        if compare:
            ref = row["reference"]
            row["speedup_wall"] = ref["epoch_wall_s"] / row["epoch_wall_s"]
            row["speedup_cpu"] = ref["epoch_cpu_s"] / row["epoch_cpu_s"]
        key = f"batch{bs}_{region}" + ("" if policy == "cap" else f"_{policy}")
        out[key] = row
        print(key, json.dumps(row, default=float), flush=True)
    out["loadavg_end"] = list(os.getloadavg())
    return out


SCENARIOS = {
    "residual": residual_vs_nonresidual,
    "sparse": sparse_data,
    "positions": position_correction,
    "nearfield": nearfield_geometry,
    "fourier": fourier_pupil,
    "fpm_real": None,  # needs the data path (see main)
    "coded": coded_few_frames,
    "raster": raster_pathology,
    "activations": activation_ablation,
    "throughput": throughput,
}


# ---------------------------------------------------------------------------- report
def markdown(results: dict[str, dict]) -> str:
    """A summary table of the stored results."""
    rows = ["| scenario | measured | acceptance |", "|---|---|---|"]

    def f(x, nd=3):
        return f"{x:.{nd}g}" if isinstance(x, float) else str(x)

    r = results.get("residual")
    if r:
        rows.append(
            f"| residual vs ab initio (far field, {f(r['probe_phase_wraps'], 2)} "
            f"wraps) | error {f(r['residual']['complex_error'])} vs "
            f"{f(r['non_residual']['complex_error'])} ({f(r['ratio'], 2)}x) | "
            "< 0.1, >= 2x |"
        )
    r = results.get("sparse")
    if r:
        for k in ("keep_50", "keep_25"):
            if k in r:
                x = r[k]
                rows.append(
                    f"| sparse {k[5:]} % ({x['n_frames']} frames, dose {f(r['dose'])}) | "
                    f"RNF {f(x['rnf']['complex_error'])} / FRC {f(x['rnf']['frc_resolution'])}"
                    f"; ePIE {f(x['epie']['complex_error'])} / "
                    f"{f(x['epie']['frc_resolution'])}; rPIE {f(x['rpie']['complex_error'])}"
                    f" / {f(x['rpie']['frc_resolution'])} (best PIE FRC on the grid "
                    f"{f(max(x['epie'].get('best_frc', 0), x['rpie'].get('best_frc', 0)))});"
                    f" margins {f(x['margin_error'], 3)}x error, {f(x['margin_frc'], 3)}x FRC"
                    " | RNF better in both |"
                )
    r = results.get("positions")
    if r:
        rows.append(
            f"| positions (2 px RMS + 1 % scale) | RMS {f(r['rms_before_px'])} -> "
            f"{f(r['learned']['rms_px'])} px ({f(r['rms_reduction'], 2)}x); error "
            f"{f(r['fixed']['complex_error'])} -> {f(r['learned']['complex_error'])} "
            "| >= 3x, error improves |"
        )
    r = results.get("nearfield")
    if r:
        for k, v in r.items():
            rows.append(
                f"| near field {k} | z {f(v['distance_error'], 2)}, lambda "
                f"{f(v['wavelength_error'], 2)}, lambda z {f(v['product_error'], 2)} "
                f"(start {f(v['start_distance_error'], 2)}, "
                f"{f(v['start_wavelength_error'], 2)}) | within 0.5 % (paraxial: "
                "product only) |"
            )
    r = results.get("fourier")
    if r:
        rows.append(
            f"| FP pupil (Z4-Z8, {f(r['aberration_rms_rad'])} rad RMS) | "
            f"{f(r['pupil_rms_error_rad'])} rad RMS | < 0.05 rad |"
        )
    r = results.get("fpm_real")
    if r:
        rows.append(
            f"| FPM blood smear (crop {r['crop']}) | FRC {f(r['frc_rnf'])} vs centre "
            f"LED {f(r['frc_centre_led'])} cycles/px ({f(r['sharpening'], 2)}x); capped "
            f"at what each can hold: {f(r.get('frc_rnf_capped', r['frc_rnf']))} vs "
            f"{f(r.get('frc_centre_led_capped', r['frc_centre_led']))} | sharper |"
        )
    r = results.get("coded")
    if r:
        rows.append(f"| coded, {r['n_frames']} frames | error {f(r['complex_error'])} | < 0.15 |")
    r = results.get("raster")
    if r:
        rows.append(
            f"| raster pathology | periodic error power ePIE / RNF = "
            f"{f(r['ratio_epie_over_rnf'], 3)} (ePIE {f(r['epie']['periodic_power'])}, "
            "its lowest over steps and epochs; rPIE "
            f"{f(r['rpie']['periodic_power'])}, RNF {f(r['rnf']['periodic_power'])}) | >= 2x |"
        )
    r = results.get("throughput")
    if r:
        runs = {k: v for k, v in r.items() if isinstance(v, dict) and "frames_per_s" in v}
        best = max(v["frames_per_s"] for v in runs.values())
        gains = [v["speedup_cpu"] for v in runs.values() if "speedup_cpu" in v]
        gain = f"; {f(min(gains), 2)}-{f(max(gains), 2)}x CPU time vs reference" if gains else ""
        rows.append(
            f"| throughput ({r['device']}, {r.get('threads', '?')} thread(s), {r['frame']} px, "
            f"{r['n_frames']} frames) | up to {f(best)} frames/s{gain} | measured |"
        )
    text = "\n".join(rows) + "\n"
    r = results.get("activations")
    if r:
        text += "\n### Activation ablation (far field, residual, same settings)\n\n"
        other = sorted({k for v in r.values() for k in v if k.startswith("lr_")})
        text += ("| activation | complex error | FRC (cycles/px) | final loss | seconds |"
                 + "".join(f" error at {k[3:]} |" for k in other) + "\n")
        text += "|---|---|---|---|---|" + "---|" * len(other) + "\n"
        for k, v in r.items():
            text += (
                f"| {k} | {f(v['complex_error'])} | {f(v['frc_resolution'])} | "
                f"{f(v['final_loss'])} | {f(v['seconds'], 3)} |"
                + "".join(f" {f(v[o]['complex_error']) if o in v else '-'} |" for o in other)
                + "\n"
            )
        lr0 = next(iter(r.values())).get("lr")
        if lr0 is not None:
            text += f"\nMain columns at lr {lr0:g} (the paper's); 30 epochs, batch 8.\n"
    return text


def main(argv=None) -> None:
    from bench._machine import machine_info

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    for name in a.only:
        t = time.perf_counter()
        if name == "fpm_real":
            path = Path(a.data) / "fpm-bloodsmear" / "bloodsmear_green.mat"
            if not path.exists():
                print(f"skip fpm_real: {path} not found", flush=True)
                continue
            res = fourier_bloodsmear(path)
        elif name == "throughput":
            res = throughput(a.device)
        else:
            res = SCENARIOS[name]()
        wall = time.perf_counter() - t
        doc = {
            "scenario": name,
            "machine": info,
            "threads": a.threads,
            "wall_seconds": wall,
            "results": res,
        }
        fname = f"rnf-{name}-{a.device}.json" if name == "throughput" else f"rnf-{name}.json"
        (out / fname).write_text(json.dumps(doc, indent=1, default=float))
        print(name, json.dumps(res, default=float), flush=True)
    stored = {}
    for f in sorted(out.glob("rnf-*.json")):
        d = json.loads(f.read_text())
        stored[d["scenario"]] = d["results"]
    (out / "rnf.md").write_text(
        "# Residual neural-field engine: measured results\n\n"
        "Written by `bench/bench_rnf.py`; all numbers are measured.\n\n" + markdown(stored)
    )


if __name__ == "__main__":
    main()
