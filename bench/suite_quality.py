"""Quality against the amount of data: simulated far field with ground truth.

For each dose and each kept fraction of the scan positions (``keep_fraction``, the same
random subset for every engine), every engine starts from the same probe prior, the same
uniform object and the same (nominal = true) positions, runs the same number of epochs, and
is judged against the true object over the region the kept frames light: aligned complex
error, phase PSNR/SSIM, and the FRC resolution against the truth (threshold 0.5, the
analogue of 1/7 for a noise-free reference; Nyquist 0.5 cycles/px means "not limited").

Full grid: 100/50/25/15 % kept, doses 1e6 and 1e4 photons per frame. ``--quick``: 100 and
25 %, dose 1e6, fewer epochs. Writes ``results/quality-<device>[-quick].json`` and, for the
smallest kept fraction, a side-by-side phase preview PNG.
"""

from __future__ import annotations

import time

import numpy as np

from bench import suite_common as C

FULL = {
    "fractions": [1.0, 0.5, 0.25, 0.15],
    "doses": [1e6, 1e4],
    "epochs": 100,
    "frame_size": 64,
    "n_positions": 200,
    "overlap": 0.75,
}
QUICK = {
    "fractions": [1.0, 0.25],
    "doses": [1e6],
    "epochs": 30,
    "frame_size": 64,
    "n_positions": 200,
    "overlap": 0.75,
}
GPU = {
    "fractions": [1.0, 0.5, 0.25, 0.15],
    "doses": [1e6, 1e4],
    "epochs": 200,
    "frame_size": 128,
    "n_positions": 400,
    "overlap": 0.75,
}


def add_args(p) -> None:
    p.add_argument("--fractions", type=float, nargs="*", help="kept fractions (override)")
    p.add_argument("--doses", type=float, nargs="*", help="photons per frame (override)")
    p.add_argument("--epochs", type=int, help="epochs for every engine (override)")
    p.add_argument(
        "--probe-prior",
        default="defocus:1.1",
        help="'true' or 'defocus:F' (zone plate with F x the true defocus)",
    )


def grid(args) -> dict:
    g = dict(
        GPU if args.device.startswith("cuda") and not args.quick else QUICK if args.quick else FULL
    )
    if getattr(args, "fractions", None):
        g["fractions"] = list(args.fractions)
    if getattr(args, "doses", None):
        g["doses"] = list(args.doses)
    if getattr(args, "epochs", None):
        g["epochs"] = int(args.epochs)
    return g


def run(args) -> dict:
    from ptytasks.subsample import keep_fraction

    g = grid(args)
    engines = C.engine_list(args, "farfield")
    head = C.run_header("quality", args)
    head["grid"] = g
    head["engines"] = engines["run"]
    head["skipped_engines"] = engines["skipped"]
    head["probe_prior"] = args.probe_prior
    path = C.result_path("quality", args.device, args.quick, args.out, getattr(args, "tag", None))
    rows: list[dict] = []
    previews: dict = {}
    t_suite = time.perf_counter()
    for dose in g["doses"]:
        data = C.farfield_dataset(
            frame_size=g["frame_size"],
            n_positions=g["n_positions"],
            overlap=g["overlap"],
            dose=dose,
            seed=0,
        )
        probe = C.probe_prior(data, args.probe_prior)
        truth = data.ground_truth["object"]
        for frac in g["fractions"]:
            idx = keep_fraction(data.n_frames, frac, seed=0)
            sub = data.subset(idx)
            mask = C.illuminated(sub)
            snaps = C.snapshot_epochs(g["epochs"], 6)
            for name in engines["run"]:
                C.log(f"quality: dose {dose:g} keep {frac:.0%} {name} ({g['epochs']} epochs)")
                rec = C.run_engine_timed(
                    name,
                    sub,
                    epochs=g["epochs"],
                    probe=probe,
                    threads=args.threads,
                    device=args.device,
                    snapshots=snaps,
                    settings=C.engine_settings(args, name),
                )
                row = {
                    "dose": dose,
                    "fraction": frac,
                    "n_frames": int(len(idx)),
                    "engine": name,
                    "ok": bool(rec.get("ok")),
                    "epochs": g["epochs"],
                }
                if rec.get("ok"):
                    row.update(C.quality(rec["object"], truth, mask))
                    row["curve"] = C.error_curve(rec, truth, mask)
                    row["times"] = C.summarise_times(rec)
                    row["settings"] = rec.get("settings")
                    if frac == min(g["fractions"]):
                        previews.setdefault(dose, {})[name] = rec["object"]
                    C.log(
                        f"  -> error {row['complex_error']:.4f}, "
                        f"{row['times'].get('epoch_s_median', float('nan')):.3f} s/epoch"
                    )
                else:
                    row["error_message"] = rec.get("error")
                    C.log(f"  -> FAILED: {rec.get('error')}")
                rows.append(row)
                C.write_json(path, {**head, "rows": rows, "partial": True})
        if dose in previews:
            png = path.with_name(f"{path.stem}-preview-dose{dose:.0e}.png".replace("+", ""))
            C.phase_panel(
                previews[dose],
                truth,
                C.illuminated(
                    data.subset(keep_fraction(data.n_frames, min(g["fractions"]), seed=0))
                ),
                png,
                title=f"phase, {min(g['fractions']):.0%} of positions, dose {dose:g}",
            )
    out = {
        **head,
        "rows": rows,
        "partial": False,
        "seconds": time.perf_counter() - t_suite,
        "headline": headline(rows, g),
    }
    C.write_json(path, out)
    return out


def headline(rows: list[dict], g: dict) -> dict:
    """Per dose, at 25 % of positions kept (else the smallest fraction run): RNF's complex
    error against every other engine's, and whether it is the lowest."""
    target = 0.25 if 0.25 in g["fractions"] else min(g["fractions"])
    out = {"fraction": target, "per_dose": {}}
    for dose in g["doses"]:
        sel = [
            r
            for r in rows
            if r["dose"] == dose
            and r["fraction"] == target
            and r["ok"]
            and np.isfinite(r.get("complex_error", np.nan))
        ]
        errs = {r["engine"]: r["complex_error"] for r in sel}
        # an engine that ran here and failed is named: "ahead of all" cannot be read then
        ran = {r["engine"] for r in rows if r["dose"] == dose and r["fraction"] == target}
        failed = sorted(ran - set(errs))
        if C.SUBJECT not in errs:
            if C.SUBJECT in ran:
                out["per_dose"][str(dose)] = {"errors": errs, "failed": failed, "rnf": None}
            continue
        others = {k: v for k, v in errs.items() if k != C.SUBJECT}
        best_other = min(others, key=others.get) if others else None
        peers_only = {k: v for k, v in others.items() if k not in C.OURS}
        peers_failed = [k for k in failed if k not in C.OURS]
        out["per_dose"][str(dose)] = {
            "errors": errs,
            "failed": failed,
            "rnf": errs[C.SUBJECT],
            "best_other": best_other,
            "best_other_error": others.get(best_other) if best_other else None,
            "rnf_ahead_of_all": None if failed else (
                bool(others) and all(errs[C.SUBJECT] < v for v in others.values())),
            "rnf_ahead_of_all_peers": None if peers_failed else (
                bool(peers_only) and all(errs[C.SUBJECT] < v for v in peers_only.values())
            ),
        }
    return out
