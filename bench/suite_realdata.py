"""Real data: half-data FRC resolution per engine on the measured sets of ../shared/data.

No ground truth: the frames (LEDs for Fourier ptychography) are split into two interleaved
halves (:meth:`ptytasks.modalities.base.Modality.half_split`), each half is reconstructed on its own
from the same priors, the second is aligned to the first (shift, phase ramp, complex
scale), and their FRC over the well-lit region (taper-edged) crosses the half-bit threshold
at the reported resolution (cycles/pixel; Nyquist 0.5 = "not limited"; metres where the
pixel size is known). Engines run only where they model the modality: pty-chi far and near
field, PtyRAD far field, ptyflow's all three.

Datasets (skipped, with the reason recorded, when the file is absent):

* ``farfield-xray-siemens-star`` (tike): the frames in a central box of the scan;
* ``nearfield-xray-p25`` (PETRA III P25, cone beam, z1 = 3.65 mm);
* ``fpm-bloodsmear`` (UConn, green LEDs).

Writes ``results/realdata-<device>[-quick].json`` and a side-by-side phase preview PNG per
dataset (half A of each engine).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from bench import suite_common as C

FILES = {
    "farfield-star": "farfield-xray-siemens-star/siemens-star-small.npz.bz2",
    "nearfield-p25": "nearfield-xray-p25/PETRAIII_P25_Near_Field_Ptycho.cxi",
    "fpm-blood": "fpm-bloodsmear/bloodsmear_green.mat",
}
# Per dataset: central box (px) for scanning sets (None: all frames), epochs, and the
# engines of the --quick run (the full run tries every engine that models the modality).
FULL = {
    "farfield-star": {"box": 240.0, "epochs": 30},
    "nearfield-p25": {"box": None, "epochs": 30},
    "fpm-blood": {"box": None, "epochs": 15},
}
QUICK = {
    "farfield-star": {"box": 150.0, "epochs": 8, "engines": ("rpie", "rnf", "ptychi-rpie")},
    "nearfield-p25": {"box": None, "epochs": 8, "engines": ("rpie",)},
    "fpm-blood": {"box": None, "epochs": 5, "engines": ("rpie",)},
}
P25_Z1 = 3.65e-3  # focus-to-sample distance (m), not stored in the file (data README)


def add_args(p) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="measured data folder (default $PTYFLOW_DATA or ../shared/data)",
    )
    p.add_argument(
        "--datasets",
        nargs="*",
        default=None,
        choices=sorted(FILES),
        help="only these real datasets",
    )


def data_dir(args) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    env = os.environ.get("PTYFLOW_DATA")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[1]
    for cand in (root.parent / "shared" / "data", root / "shared" / "data"):
        if cand.is_dir():
            return cand
    return root.parent / "shared" / "data"


def load(name: str, path: Path):
    from storage.readers import read_any

    if name == "nearfield-p25":
        return read_any(path, z1=P25_Z1)
    return read_any(path)


def _placed(d, margin: float = 8.0):
    pos = d.positions_px - d.positions_px.min(0) + margin
    shape = tuple(
        int(np.ceil(v)) + n + int(margin) for v, n in zip(pos.max(0), d.frame_shape, strict=True)
    )
    return dataclasses.replace(d, positions_px=pos, object_shape=shape)


def central(d, box: float | None):
    if box is None or d.positions_px is None:
        return d
    p = d.positions_px
    c = (p.min(0) + p.max(0)) / 2
    keep = np.nonzero(np.all(np.abs(p - c) <= box / 2, axis=1))[0]
    return _placed(d.subset(keep))


def common_probe(d):
    """The probe every engine starts from: the file's, else ptyflow's default estimate
    (the back-propagated root-mean frame), so ptyflow and the peers share it."""
    from ptytasks.modalities import modality_of

    if modality_of(d).has_pupil:
        return None
    if d.probe is not None:
        p = np.asarray(d.probe, np.complex64)
    else:
        import torch

        from ptytasks.engines.pie import initial_probe
        from ptytasks.modalities import model_for

        model = model_for(d)
        p = initial_probe(d, model, "cpu", torch.complex64).numpy().astype(np.complex64)
    # Power matched to the mean frame (|O| ~ 1, unitary propagation), as ptyflow's PIE does
    # internally: engines that take the probe as given (pty-chi's PIE) start from the same.
    frames = np.asarray(d.frames, np.float64)
    target = float(np.clip(frames, 0, None).sum(axis=(1, 2)).mean())
    return (p * np.sqrt(target / max(float(np.sum(np.abs(p) ** 2)), 1e-30))).astype(np.complex64)


def lit_mask(d, probe, frac: float = 0.5) -> np.ndarray:
    import torch

    from ptytasks.modalities import modality_of
    from ptytasks.physics.shifts import coverage

    if not modality_of(d).scanning or d.positions_px is None or probe is None:
        return np.ones(d.object_shape, bool)
    w = torch.as_tensor(np.abs(probe) ** 2, dtype=torch.float64)
    cov = coverage(torch.as_tensor(d.positions_px), d.frame_shape, d.object_shape, w).numpy()
    return cov > frac * cov.max()


def half_frc(a, b, mask, pixel_size, band_limit=None) -> dict:
    """Half-data FRC of two half reconstructions, the product's own yardstick.

    ``ptytasks.evaluation.half_data_frc`` (aligned, means removed, soft-edged mask, effective
    pixel counts, searched up to ``band_limit``: the band both halves measured, e.g. an
    FPM synthetic aperture) and the standard first crossing of
    ``ptytasks.metrics.frc.resolution`` give the headline numbers, half-bit and 1/7. The
    last half-bit crossing of the curve smoothed over 5 rings is kept only as a labelled
    diagnostic (``diag_``): it is no resolution.
    """
    from ptytasks.evaluation import half_data_frc

    curve = half_data_frc(np.asarray(a), np.asarray(b), np.asarray(mask, bool),
                          band_limit=band_limit)
    hb = curve.resolution("halfbit", pixel_size)
    s7 = curve.resolution("1/7", pixel_size)
    low = (curve.freq > 0) & (curve.freq <= 0.125)
    v = np.nan_to_num(np.asarray(curve.frc, float))
    smooth = np.convolve(v, np.ones(5) / 5, mode="same")
    above = np.flatnonzero((smooth >= curve.halfbit) & (curve.freq > 0))
    return {
        "frc_halfbit_cyc_px": float(hb.freq),
        "frc_halfbit_m": hb.length_m,
        "crossed": bool(hb.crossed),
        "frc_onesev_cyc_px": float(s7.freq),
        "frc_low_freq_region_cyc_px": float(curve.min_freq),
        "frc_band_limit_cyc_px": band_limit,
        "diag_frc_last_halfbit_smoothed_cyc_px": float(curve.freq[above[-1]]) if above.size
        else 0.0,
        "frc_min_to_quarter_nyquist": float(np.nanmin(curve.frc[low])) if low.any() else None,
        "frc_curve": {
            "freq": curve.freq.tolist(),
            "frc": [None if not np.isfinite(v) else float(v) for v in curve.frc],
            "halfbit": curve.halfbit.tolist(),
            "n_effective": curve.n_effective.tolist(),
        },
    }


def run(args) -> dict:
    from ptytasks.evaluation import half_data_band_limit
    from ptytasks.modalities import modality_of

    head = C.run_header("realdata", args)
    root = data_dir(args)
    head["data_dir"] = str(root)
    path = C.result_path("realdata", args.device, args.quick, args.out, getattr(args, "tag", None))
    plan = QUICK if args.quick else FULL
    rows: list[dict] = []
    datasets: dict = {}
    t_suite = time.perf_counter()
    for name, rel in FILES.items():
        if getattr(args, "datasets", None) and name not in args.datasets:
            continue
        f = root / rel
        if not f.is_file():
            datasets[name] = {"skipped": f"{f} is absent"}
            C.log(f"realdata: {name} skipped ({f} absent)")
            continue
        cfg = plan[name]
        try:
            d = central(load(name, f), cfg["box"])
        except Exception as exc:  # noqa: BLE001 - an unreadable file skips its dataset
            datasets[name] = {"skipped": f"unreadable: {type(exc).__name__}: {exc}"}
            continue
        probe = common_probe(d)
        # the pipeline's halves: interleaved positions; Fourier ptychography: a
        # checkerboard of the LED board, so both halves span the same illumination NA
        halves = modality_of(d).half_split(d)
        band = half_data_band_limit(d, halves)
        eng = C.engine_list(args, d.modality, quick_engines=cfg.get("engines"))
        datasets[name] = {
            "modality": d.modality,
            "n_frames": d.n_frames,
            "frame_shape": list(d.frame_shape),
            "object_shape": list(d.object_shape),
            "pixel_size_m": d.pixel_size,
            "epochs": cfg["epochs"],
            "central_box_px": cfg["box"],
            "engines": eng["run"],
            "skipped_engines": eng["skipped"],
        }
        # A pixel size the reader marked nominal (the star file stores none) gives no metres.
        nominal_px = "pixel_size" in (d.meta.get("nominal") or [])
        datasets[name]["pixel_size_nominal"] = nominal_px
        px_m = None if nominal_px else d.pixel_size
        mask = lit_mask(d, probe)
        previews = {}
        for engine in eng["run"]:
            C.log(
                f"realdata: {name} ({d.modality}, {d.n_frames} frames) {engine}, "
                f"2 halves x {cfg['epochs']} epochs"
            )
            recs = []
            for k, h in enumerate(halves):
                sub = d.subset(h)
                recs.append(
                    C.run_engine_timed(
                        engine,
                        sub,
                        epochs=cfg["epochs"],
                        probe=probe,
                        threads=args.threads,
                        device=args.device,
                        seed=k,
                        settings=C.engine_settings(args, engine),
                    )
                )
            row = {"dataset": name, "engine": engine, "ok": all(r.get("ok") for r in recs)}
            if row["ok"]:
                try:
                    row.update(half_frc(recs[0]["object"], recs[1]["object"], mask, px_m,
                                        band))
                except Exception as exc:  # noqa: BLE001
                    row["ok"] = False
                    row["error_message"] = f"FRC failed: {type(exc).__name__}: {exc}"
                row["times"] = [C.summarise_times(r) for r in recs]
                row["settings"] = recs[0].get("settings")
                previews[engine] = recs[0]["object"]
                if row["ok"]:
                    C.log(f"  -> half-bit {row['frc_halfbit_cyc_px']:.3f} cyc/px")
            else:
                row["error_message"] = "; ".join(
                    str(r.get("error")) for r in recs if not r.get("ok")
                )
                C.log(f"  -> FAILED: {row['error_message']}")
            rows.append(row)
            C.write_json(path, {**head, "datasets": datasets, "rows": rows, "partial": True})
        if previews:
            png = path.with_name(f"{path.stem}-preview-{name}.png")
            C.phase_panel(
                previews, None, mask, png, title=f"{name}: phase of half A, {cfg['epochs']} epochs"
            )
            datasets[name]["preview"] = png.name
    out = {
        **head,
        "datasets": datasets,
        "rows": rows,
        "partial": False,
        "seconds": time.perf_counter() - t_suite,
    }
    C.write_json(path, out)
    return out
