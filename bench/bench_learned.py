"""Learned single-shot inversion (issue #9): PPN vs PtychoNN vs ePIE, speed, RNF prior.

Every number is measured here on simulated data the networks never trained on (objects
from seeds and scans the training stream does not draw); ``tests/learned/
test_single_shot_acceptance.py`` runs the same functions and asserts the thresholds.

Parts (``--parts``, all by default):

``compare``  PPN vs PtychoNN (committed weights, the same training budget): per-patch
             amplitude/phase PSNR and SSIM on a held-out patch set, and the stitched field
             of a held-out scan (``ptytasks.metrics.quality_report`` after alignment).
``overlap``  PPN vs ePIE (100 epochs, probe updated; started from the true probe, and
             ``epie_blind`` from the mean-pattern probe estimate) at 30 % and 75 % linear
             overlap of a raster scan over about the same field.
``epie_regime`` ePIE (true probe) at 30 % / 75 % overlap for probe footprints 0.35, 0.7, 0.9 N.
``speed``    a 1000-position dataset: learned inference (load, predict, stitch) against
             100 epochs of ePIE on the same data, in one run.
``prior``    RNF from the uniform prior and from the learned object: the complex error
             after ``E`` epochs for a ladder of ``E``; epochs needed to reach the target
             error (the uniform run's error at its largest ``E``).

Usage::

    python bench/bench_learned.py                   # bench/results/learned-<host>.json/.md
    python bench/bench_learned.py --parts compare,speed --quick

Timings are wall clock on a possibly shared machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptytasks.engines.registry import run_engine  # noqa: E402
from ptytasks.learned.inversion import load_inversion, n_parameters  # noqa: E402
from ptytasks.metrics.errors import complex_error, quality_report  # noqa: E402
from ptytasks.simulate import simulate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEYS = ("amp_psnr", "amp_ssim", "phase_psnr", "phase_ssim")


def dataset(overlap: float, n_positions: int, seed: int, dose: float = 1e6, frame: int = 32,
            diameter: float | None = None):
    """Held-out far-field raster scan (dead-leaves object, known zone-plate probe).

    ``diameter``: probe footprint, pixels (default the simulator's and the networks' 0.35 N).
    """
    return simulate("farfield", frame_size=frame, n_positions=n_positions, overlap=overlap,
                    scan="raster", object_kind="dead_leaves", dose=dose, known_probe=True,
                    seed=seed, probe_diameter_px=diameter)  # fmt: skip


def region(data, fraction: float = 0.1) -> np.ndarray:
    """Well-illuminated pixels: summed ``|P|^2`` at least ``fraction`` of its maximum."""
    from ptytasks.physics.shifts import coverage

    p2 = torch.as_tensor(np.abs(data.ground_truth["probe"]) ** 2)
    pos = torch.as_tensor(np.rint(data.ground_truth["positions_px"]))
    cov = coverage(pos, p2.shape, tuple(data.object_shape), p2).numpy()
    return cov >= fraction * cov.max()


def field_metrics(obj: np.ndarray, data) -> dict:
    """Quality of a reconstruction against the truth on the illuminated region."""
    rep = quality_report(obj, data.ground_truth["object"], region(data))
    return {k: float(rep[k]) for k in (*KEYS, "complex_error")}


def learned(data, model: str = "ppn", **kw):
    return run_engine("learned", data, {"model": model, **kw}, probe_prior=data.probe)


def epie(data, epochs: int = 100, blind: bool = False):
    """ePIE from the true probe (updated), or ``blind``: from the mean-pattern estimate."""
    from ptytasks.calibration import probe_prior

    p0 = probe_prior(data, "mean_pattern") if blind else data.probe
    return run_engine("epie", data, {"epochs": epochs, "seed": 0}, probe_prior=p0)


def paired_difference(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean per-patch difference ``a - b`` by metric with a 95 % paired bootstrap interval."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in a:
        d = np.asarray(a[k]) - np.asarray(b[k])
        idx = rng.integers(0, d.size, size=(n_boot, d.size))
        lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
        out[k] = {"mean": float(d.mean()), "ci95": [float(lo), float(hi)],
                  "fraction_a_better": float(np.mean(d > 0))}  # fmt: skip
    return out


# --- parts -----------------------------------------------------------------------------------
def part_compare(quick: bool = False) -> dict:
    """PPN vs PtychoNN on held-out patches and one held-out stitched scan."""
    from ptytasks.learned.single_shot_data import held_out_batch
    from ptytasks.learned.train_inversion import patch_scores

    out: dict = {}
    nets = {m: load_inversion(model=m) for m in ("ppn", "ptychonn")}
    geo, noise = nets["ppn"].config.geometry, nets["ppn"].config.noise
    x, a, p = held_out_batch(64 if quick else 256, geo, noise, seed=7_000_001)
    scores = {m: patch_scores(net, x, a, p, noise) for m, net in nets.items()}
    out["patches"] = {m: {k: float(v.mean()) for k, v in sc.items()} for m, sc in scores.items()}
    out["paired_difference"] = paired_difference(scores["ppn"], scores["ptychonn"])
    data = dataset(0.6, 49 if quick else 100, seed=101)
    out["field"] = {m: field_metrics(learned(data, m).object, data) for m in nets}
    # counted on the trained networks (loading folds BatchNorm into the convolutions)
    out["parameters"] = {m: n_parameters(load_inversion(model=m, fast=False)) for m in nets}
    out["train_seconds"] = {m: net.meta.get("train_seconds") for m, net in nets.items()}
    return out


def part_overlap(quick: bool = False, epochs: int = 100) -> dict:
    """PPN and ePIE at 30 % and 75 % overlap over (about) the same field of view."""
    out = {}
    for ov, n in ((0.3, 36 if quick else 64), (0.75, 196 if quick else 400)):
        data = dataset(ov, n, seed=202)
        t = time.perf_counter()
        ppn = learned(data)
        t_ppn = time.perf_counter() - t
        row = {"n_positions": int(data.n_frames), "object_shape": list(data.object_shape),
               "ppn": {**field_metrics(ppn.object, data), "seconds": t_ppn}}  # fmt: skip
        for name, blind in (("epie", False), ("epie_blind", True)):
            t = time.perf_counter()
            ep = epie(data, 20 if quick else epochs, blind=blind)
            row[name] = {**field_metrics(ep.object, data), "seconds": time.perf_counter() - t,
                         "epochs": ep.n_epochs}  # fmt: skip
        out[f"{ov:.2f}"] = row
    return out


def part_epie_regime(quick: bool = False, epochs: int = 100) -> dict:
    """ePIE (true probe) at 30 % and 75 % overlap for footprints of 0.35, 0.7 and 0.9 N.

    Where a single frame is oversampled (footprint ``D`` well under ``N / sqrt(2)``) ePIE with
    a known probe needs little overlap; the papers' collapse at low overlap belongs to the
    regime ``D -> N``. The networks here are trained at ``0.35 N`` only.
    """
    out: dict = {}
    for frac in (0.35, 0.7, 0.9):
        for ov, n in ((0.3, 36 if quick else 64), (0.75, 196 if quick else 400)):
            data = dataset(ov, n, seed=202, diameter=frac * 32)
            ep = epie(data, 20 if quick else epochs)
            out[f"{frac:.2f}N/{ov:.2f}"] = {"diameter_px": frac * 32, "overlap": ov,
                                            "n_positions": int(data.n_frames),
                                            **field_metrics(ep.object, data)}  # fmt: skip
    return out


def part_speed(quick: bool = False, epochs: int = 100, repeats: int = 3,
               threads: int | None = None) -> dict:
    """Learned inference vs ``epochs`` of ePIE on one 1000-position dataset.

    Both run with ``threads`` torch threads (default: every core, as a user would run
    them); ePIE's sequential position updates hardly use a second core, a batched network
    does. The learned time is the median of ``repeats`` complete runs (load the weights,
    predict, stitch); ePIE's is one run of ``epochs`` epochs (long enough to average out
    noise). The learned time at one thread is reported beside.
    """
    old = torch.get_num_threads()
    threads = int(threads or os.cpu_count() or 1)
    data = dataset(0.7, 1024, seed=303)
    load_inversion()  # warm the import and file cache; the timed calls still load the file

    def timed_learned(n_threads: int) -> tuple[float, list, dict]:
        torch.set_num_threads(n_threads)
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            res = learned(data)
            runs.append(time.perf_counter() - t)
        return float(np.median(runs)), runs, res.timings

    try:
        t_one, runs_one, _ = timed_learned(1)
        t_learned, runs, timings = timed_learned(threads)
        n_ep = 5 if quick else epochs
        t = time.perf_counter()
        ep = epie(data, n_ep)
        t_epie = (time.perf_counter() - t) * (epochs / n_ep)
    finally:
        torch.set_num_threads(old)
    return {"n_positions": int(data.n_frames), "frame": list(data.frame_shape),
            "threads": threads, "learned_seconds": t_learned, "learned_runs": runs,
            "learned_timings": timings, "learned_seconds_1thread": t_one,
            "learned_runs_1thread": runs_one, "epie_epochs": epochs, "epie_epochs_run": n_ep,
            "epie_seconds": t_epie, "speedup": t_epie / t_learned,
            "speedup_learned_1thread": t_epie / t_one,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "epie_final_loss": ep.final_loss}  # fmt: skip


def part_prior(quick: bool = False) -> dict:
    """RNF epochs to a target complex error from the uniform and the learned prior."""
    data = dataset(0.6, 49 if quick else 64, seed=404)
    truth, mask = data.ground_truth["object"], region(data)
    from scipy.ndimage import gaussian_filter

    # the oracle is the truth blurred by 0.7 px: a prior far better than any single-shot
    # network gives here; it bounds what ANY object prior can save with these RNF settings
    oracle = gaussian_filter(truth.real, 0.7) + 1j * gaussian_filter(truth.imag, 0.7)
    priors = {"uniform": np.ones(data.object_shape, np.complex64),
              "learned": learned(data).object,
              "oracle_blur0.7": oracle.astype(np.complex64)}  # fmt: skip
    ladder = [1, 2, 4, 8] if quick else [2, 4, 8, 12, 16, 20, 24, 28, 32]
    curves: dict = {}
    for name, prior in priors.items():
        curves[name] = {"epochs": [0], "error": [complex_error(prior, truth, mask)],
                        "seconds": [0.0]}  # fmt: skip
        for e in ladder:
            t = time.perf_counter()
            res = run_engine("rnf", data, {"epochs": e, "seed": 0, "learn_probe": False},
                             object_prior=prior, probe_prior=data.probe)  # fmt: skip
            curves[name]["epochs"].append(e)
            curves[name]["error"].append(complex_error(res.object, truth, mask))
            curves[name]["seconds"].append(time.perf_counter() - t)
    target = curves["uniform"]["error"][-1]

    def needed(c):
        """Epochs to the target, log-linearly interpolated between ladder rungs."""
        e, err = c["epochs"], np.log(np.asarray(c["error"]))
        for i in range(len(e)):
            if err[i] <= np.log(target):
                if i == 0:
                    return 0.0
                f = (err[i - 1] - np.log(target)) / max(err[i - 1] - err[i], 1e-12)
                return float(e[i - 1] + f * (e[i] - e[i - 1]))
        return None

    def ratio(name):
        n_uni, n = needed(curves["uniform"]), needed(curves[name])
        return (n_uni / max(n, 0.5)) if (n_uni and n is not None) else None

    return {"target_error": target, "curves": curves,
            "epochs_uniform": needed(curves["uniform"]),
            "epochs_learned": needed(curves["learned"]), "epoch_ratio": ratio("learned"),
            "epoch_ratio_oracle": ratio("oracle_blur0.7")}  # fmt: skip


PARTS = {"compare": part_compare, "overlap": part_overlap, "epie_regime": part_epie_regime,
         "speed": part_speed, "prior": part_prior}  # fmt: skip


# --- report ------------------------------------------------------------------------------------
NOTES = """\
- Held-out data: dead-leaves objects from seeds the training stream never draws, raster
  scans, dose 1e6 photons per frame, the known zone-plate probe (32 x 32 frames, footprint
  0.35 N). Field metrics: `ptytasks.metrics.quality_report` (aligned to the truth) on pixels
  whose summed `|P|^2` is at least 10 % of its maximum; patch metrics on the patch pixels
  with `|P|^2` >= 10 % of its peak.
- `epie`: 100 epochs started from the true probe (probe updated); `epie_blind`: started
  from the mean-pattern probe estimate.
- Each part records when it finished and the load average then (JSON); `--merge` reruns
  single parts. Which acceptance lines hold, and why not: docs/learned.md.
"""


def _fmt(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _row(name, d):
    return f"| {name} | " + " | ".join(f"{d[k]:.3f}" for k in KEYS) + " |"


def markdown(res: dict) -> str:
    lines = [f"# Learned single-shot inversion ({res['machine']['host']})", "",
             f"torch {res['machine']['torch']}, {res['machine']['threads']} thread(s), load "
             f"average {res['machine']['load']}; weights: ptytasks/learned/weights/.", ""]
    head = "| | amp PSNR (dB) | amp SSIM | phase PSNR (dB) | phase SSIM |\n|---|---|---|---|---|"
    if "compare" in res:
        c = res["compare"]
        lines += ["## PPN vs PtychoNN (same training budget, held-out data)", "",
                  "Held-out patches (normalised to the training ranges, data range 1; illuminated "
                  "pixels, |P|^2 >= 10 % of its peak):", "", head]
        lines += [_row(m, c["patches"][m]) for m in c["patches"]]
        if "paired_difference" in c:
            lines += ["", "PPN - PtychoNN per patch (mean, 95 % paired bootstrap interval, share "
                      "of patches where PPN is better):", "",
                      "| metric | mean | 95 % interval | PPN better |", "|---|---|---|---|"]
            for k, v in c["paired_difference"].items():
                lines.append(f"| {k} | {v['mean']:+.4f} | [{v['ci95'][0]:+.4f}, "
                             f"{v['ci95'][1]:+.4f}] | {v['fraction_a_better']:.0%} |")
        lines += ["", "Stitched held-out scan (60 % overlap, aligned to the truth):", "", head]
        lines += [_row(m, c["field"][m]) for m in c["field"]]
        lines += ["", f"Parameters: {c['parameters']}", ""]
    if "overlap" in res:
        lines += ["## PPN vs ePIE across overlap (stitched field vs truth)", "",
                  "| overlap | method | amp PSNR | amp SSIM | phase PSNR | phase SSIM | s |",
                  "|---|---|---|---|---|---|---|"]
        for ov, d in res["overlap"].items():
            if not isinstance(d, dict):
                continue
            for m in ("ppn", "epie", "epie_blind"):
                v = d[m]
                lines.append(f"| {float(ov):.0%} ({d['n_positions']} pos) | {m} | "
                             + " | ".join(f"{v[k]:.3f}" for k in KEYS)
                             + f" | {v['seconds']:.2f} |")  # fmt: skip
        lines.append("")
    if "epie_regime" in res:
        lines += ["## ePIE (true probe) vs probe footprint", "",
                  "| footprint / overlap | positions | phase SSIM | amp SSIM | complex error |",
                  "|---|---|---|---|---|"]
        for key, v in res["epie_regime"].items():
            if isinstance(v, dict):
                lines.append(f"| {key} | {v['n_positions']} | {v['phase_ssim']:.3f} | "
                             f"{v['amp_ssim']:.3f} | {v['complex_error']:.3f} |")
        lines.append("")
    if "speed" in res:
        s = res["speed"]
        lines += ["## Speed (one run)", "",
                  f"{s['n_positions']} positions, {s.get('threads', 1)} torch thread(s) for "
                  f"both: learned {s['learned_seconds']:.2f} s (median of 3: load, predict, "
                  f"stitch), ePIE {s['epie_epochs']} epochs {s['epie_seconds']:.1f} s "
                  f"({s['epie_epochs_run']} run): **{s['speedup']:.0f}x**."
                  + (f" Learned at one thread: {s['learned_seconds_1thread']:.2f} s, "
                     f"{s['speedup_learned_1thread']:.0f}x." if "learned_seconds_1thread" in s
                     else ""), ""]
    if "prior" in res:
        p = res["prior"]
        lines += ["## RNF prior", "", f"Target complex error {p['target_error']:.4f} (uniform "
                  f"prior's at its last epoch count); epochs to it, log-linearly interpolated "
                  f"between rungs: uniform {_fmt(p['epochs_uniform'])}, learned "
                  f"{_fmt(p['epochs_learned'])} (ratio {_fmt(p['epoch_ratio'], 2)}); the oracle "
                  f"prior (truth blurred by 0.7 px): ratio {_fmt(p.get('epoch_ratio_oracle'), 2)}.",
                  "",
                  "| epochs | " + " | ".join(str(e) for e in p["curves"]["uniform"]["epochs"])
                  + " |", "|---" * (1 + len(p["curves"]["uniform"]["epochs"])) + "|"]
        for name, c in p["curves"].items():
            lines.append(f"| {name} | " + " | ".join(f"{e:.3f}" for e in c["error"]) + " |")
        lines.append("")
    lines += ["## Notes", "", NOTES]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--merge", action="store_true",
                    help="update these parts in an existing results file, keep the others")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    host = "vm" if not os.environ.get("BENCH_HOST") else os.environ["BENCH_HOST"]
    res: dict = {"machine": {"host": host, "torch": torch.__version__,
                             "python": platform.python_version(),
                             "threads": torch.get_num_threads(),
                             "load": [round(x, 2) for x in os.getloadavg()]}}  # fmt: skip
    out = args.out or REPO / "bench" / "results" / f"learned-{host}.json"
    if args.merge and out.is_file():
        res = {**json.loads(out.read_text()), "machine": res["machine"]}
    for name in args.parts.split(","):
        t = time.perf_counter()
        res[name] = PARTS[name](quick=args.quick)
        res[name]["bench_seconds"] = time.perf_counter() - t
        res[name]["finished_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        res[name]["load"] = [round(x, 2) for x in os.getloadavg()]
        print(f"{name}: {json.dumps(res[name], default=float)[:600]}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return res


if __name__ == "__main__":
    main()
