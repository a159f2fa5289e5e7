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
import json
import math
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
    fractions=(0.5, 0.25), *, dose: float = 1e4, epochs: int = 100, seed: int = 0
) -> dict:
    """Keep a random 50 % / 25 % of a 70 %-overlap scan (64 positions, Poisson noise at
    ``dose`` photons per frame). ePIE and rPIE get a grid of steps and iteration counts
    and are scored at their best (on the ground truth: tuned generously); RNF runs its
    fixed settings. Same probe prior (5 % defocus error), uniform object, same positions.
    """
    from ptytasks.subsample import keep_fraction

    full = farfield(64, seed=seed, dose=dose)
    gt = full.ground_truth
    prior = zone_plate_prior(full)
    grids = {
        "epie": [(1.0, 1.0), (0.5, 1.0), (0.25, 1.0)],
        "rpie": [(0.25, 1.0), (0.1, 1.0), (0.05, 1.0), (0.02, 1.0)],
    }
    out = {"dose": dose, "n_positions": full.n_frames}
    for frac in fractions:
        keep = keep_fraction(full.n_frames, frac, seed=seed)
        data = full.subset(keep)
        mask = illuminated(full, 0.1, keep)
        row = {"n_frames": data.n_frames}
        for variant, grid in grids.items():
            best = None
            for alpha, beta in grid:
                for it in (30, 100, 300):
                    o = PIEOptions(variant=variant, iterations=it, alpha=alpha, beta=beta)
                    r = reconstruct_pie(data, o, probe_init=prior)
                    s = scores(r.object, gt["object"], mask)
                    if best is None or s["complex_error"] < best["complex_error"]:
                        best = {**s, "alpha": alpha, "beta": beta, "iterations": it}
            row[variant] = best
        opts = RNFOptions(epochs=epochs, batch_size=4, lr=3e-3, mu=0.1, seed=seed)
        r, t = _timed(lambda o=opts, d=data: reconstruct_rnf(d, o, probe_prior=prior))
        row["rnf"] = {**scores(r.object, gt["object"], mask), "seconds": t}
        best_pie = min(row["epie"]["complex_error"], row["rpie"]["complex_error"])
        best_frc = max(row["epie"]["frc_resolution"], row["rpie"]["frc_resolution"])
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
    values, which the data do not fix, too.
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
    gt = data.ground_truth
    opts = RNFOptions(
        epochs=epochs,
        batch_size=4,
        lr=3e-3,
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
        "complex_error": complex_error(r.object, gt["object"]),
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
        learn_probe=False,
        learn_zernike=True,
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
    return {
        "crop": crop,
        "upsample": up,
        "leds_per_half": [len(h) for h in halves],
        "frc_rnf": r_rnf,
        "frc_centre_led": r_bright,
        "sharpening": r_rnf / r_bright,
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
    (and rPIE)."""
    from ptytasks.engines.rnf import default_probe, model_for

    data = farfield(49, seed=seed, scan="raster", probe="gaussian")
    gt = data.ground_truth
    mask = illuminated(data, 0.3)
    pos = gt["positions_px"]
    step = tuple(float(np.median(np.diff(np.unique(np.round(pos[:, a], 3))))) for a in (0, 1))
    p0 = default_probe(data, model_for(data)).numpy()
    out = {"step_px": step}
    rnf_opts = RNFOptions(epochs=epochs, batch_size=4, lr=3e-3, lr_decay=0.1, seed=seed)
    runs = {
        "epie": lambda: reconstruct_pie(data, PIEOptions(variant="epie", iterations=100),
                                        probe_init=p0),
        "rpie": lambda: reconstruct_pie(data, PIEOptions(variant="rpie", iterations=100),
                                        probe_init=p0),
        "rnf": lambda: reconstruct_rnf(data, rnf_opts, probe_prior=p0),
    }
    for name, fn in runs.items():
        r, t = _timed(fn)
        out[name] = {**periodic_error(r.object, gt["object"], mask, step),
                     "complex_error": complex_error(r.object, gt["object"], mask), "seconds": t}
    out["ratio_epie_over_rnf"] = out["epie"]["periodic_power"] / out["rnf"]["periodic_power"]
    return out


def activation_ablation(epochs: int = 30, seed: int = 0) -> dict:
    """Same far-field problem (residual, probe prior) for each activation."""
    data = farfield(seed=seed)
    prior = zone_plate_prior(data)
    gt = data.ground_truth
    mask = illuminated(data)
    out = {}
    for act in ACTIVATIONS:
        opts = RNFOptions(epochs=epochs, batch_size=8, lr=3e-3, activation=act, seed=seed)
        r, t = _timed(lambda o=opts: reconstruct_rnf(data, o, probe_prior=prior))
        out[act] = {
            **scores(r.object, gt["object"], mask),
            "final_loss": r.final_loss,
            "seconds": t,
        }
    return out


def throughput(
    device: str = "cpu",
    *,
    frame: int = 64,
    n_positions: int = 100,
    batch_sizes=(4, 16),
    epochs: int = 2,
) -> dict:
    """Frames per second of full epochs (far field, 64 px probe, ~170 px object)."""
    data = simulate("farfield", frame_size=frame, n_positions=n_positions, seed=0)
    out = {
        "device": device,
        "frame": frame,
        "n_frames": data.n_frames,
        "object_shape": list(data.object_shape),
    }
    for bs in batch_sizes:
        for region in ("auto", "full"):
            opts = RNFOptions(epochs=epochs, batch_size=bs, eval_region=region, device=device)
            r = reconstruct_rnf(data, opts)
            t = r.extras["epoch_seconds"][1:] or r.extras["epoch_seconds"]
            out[f"batch{bs}_{region}"] = {
                "frames_per_s": data.n_frames / float(np.mean(t)),
                "epoch_seconds": float(np.mean(t)),
            }
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
                    f" / {f(x['rpie']['frc_resolution'])} | RNF better in both |"
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
            f"LED {f(r['frc_centre_led'])} cycles/px ({f(r['sharpening'], 2)}x) | "
            "sharper |"
        )
    r = results.get("coded")
    if r:
        rows.append(f"| coded, {r['n_frames']} frames | error {f(r['complex_error'])} | < 0.15 |")
    r = results.get("raster")
    if r:
        rows.append(
            f"| raster pathology | periodic error power ePIE / RNF = "
            f"{f(r['ratio_epie_over_rnf'], 3)} (rPIE {f(r['rpie']['periodic_power'])},"
            f" RNF {f(r['rnf']['periodic_power'])}) | >= 2x |"
        )
    r = results.get("throughput")
    if r:
        best = max(v["frames_per_s"] for k, v in r.items() if isinstance(v, dict))
        rows.append(
            f"| throughput ({r['device']}, {r['frame']} px, {r['n_frames']} frames) | "
            f"up to {f(best)} frames/s | measured |"
        )
    text = "\n".join(rows) + "\n"
    r = results.get("activations")
    if r:
        text += "\n### Activation ablation (far field, residual, same settings)\n\n"
        text += "| activation | complex error | FRC (cycles/px) | final loss | seconds |\n"
        text += "|---|---|---|---|---|\n"
        for k, v in r.items():
            text += (
                f"| {k} | {f(v['complex_error'])} | {f(v['frc_resolution'])} | "
                f"{f(v['final_loss'])} | {f(v['seconds'], 3)} |\n"
            )
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
