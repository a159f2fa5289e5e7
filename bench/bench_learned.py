"""Learned single-shot inversion (issue #9): PPN vs PtychoNN vs ePIE, speed, RNF prior.

Every number is measured here on simulated data the networks never trained on (objects
from seeds and scans the training stream does not draw); ``tests/learned/
test_single_shot_acceptance.py`` runs the same functions and asserts the thresholds.

Two committed weight sets (``--preset``, :data:`ptytasks.learned.inversion.PRESETS`):
``default`` -- the simulator's oversampled zone plate (footprint 0.35 N) and generic objects
(dead leaves, amplitude and phase independent); ``layout`` -- the papers' regime, a probe
filling 0.9 of the window and integrated-circuit-like single-material layouts (held-out
layouts are new drawings of the same kind: "samples without feature distribution shifts").

Parts (``--parts``, all by default):

``compare``  PPN vs PtychoNN (the same training budget): per-patch amplitude/phase PSNR and
             SSIM on held-out patches with a paired bootstrap, and the stitched field of a
             held-out 60 %-overlap scan (``ptytasks.metrics.quality_report``).
``overlap``  PPN vs ePIE at 30 % and 75 % linear overlap of a raster scan over about the same
             field: ePIE 100 epochs started from the true probe and refining it (the papers'
             protocol), with the probe held at the truth (``epie_fixed``) and, default
             preset, from the mean-pattern probe (``epie_blind``).
``dose``     The same at 30 % overlap for doses 1e4 and 1e5 photons per frame.
``epie_regime`` ePIE (true probe) at 30 % / 75 % overlap for footprints 0.35, 0.7, 0.9 N.
``speed``    a 1000-position dataset: learned inference (load, predict, stitch) against
             100 epochs of ePIE on the same data, in one run.
``prior``    RNF from the uniform prior and from the learned object at several overlaps: the
             complex error after ``E`` epochs for a ladder of ``E`` (one run per prior,
             recorded on the way); epochs needed to reach the target error (1.1 x the worse
             of the two final errors).

Usage::

    python bench/bench_learned.py [--preset layout]   # bench/results/learned[-layout]-<host>.*
    python bench/bench_learned.py --parts compare,speed --quick

Timings are wall clock on a possibly shared machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import math
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


#: Held-out data of each weight preset: object kind, amplitude at image 0 and 1, footprint.
REGIMES = {"default": {"object_kind": "dead_leaves", "amplitude_range": (0.8, 1.0),
                       "footprint": 0.35},
           "layout": {"object_kind": "layout", "amplitude_range": (1.0, 0.8),
                      "footprint": 0.9}}  # fmt: skip


def dataset(overlap: float, n_positions: int, seed: int, dose: float = 1e6, frame: int = 32,
            diameter: float | None = None, preset: str = "default"):
    """Held-out far-field raster scan of the ``preset``'s objects with the known probe.

    ``diameter``: probe footprint, pixels (default the preset's: 0.35 N or 0.9 N).
    """
    reg = REGIMES[preset]
    return simulate("farfield", frame_size=frame, n_positions=n_positions, overlap=overlap,
                    scan="raster", object_kind=reg["object_kind"], dose=dose, known_probe=True,
                    amplitude_range=reg["amplitude_range"], seed=seed,
                    probe_diameter_px=diameter or reg["footprint"] * frame)  # fmt: skip


def region(data, fraction: float = 0.1) -> np.ndarray:
    """Well-illuminated pixels: summed ``|P|^2`` at least ``fraction`` of its maximum."""
    from ptytasks.physics.shifts import coverage

    p2 = torch.as_tensor(np.abs(data.ground_truth["probe"]) ** 2)
    pos = torch.as_tensor(np.rint(data.ground_truth["positions_px"]))
    cov = coverage(pos, p2.shape, tuple(data.object_shape), p2).numpy()
    return cov >= fraction * cov.max()


def papers_phase_ssim(obj: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Phase SSIM as the papers score it: unwrapped, each map min-max normalised to [0, 1].

    Only the global phase is removed (no shift or ramp fit). Each phase is unwrapped over
    ``mask`` (:func:`skimage.restoration.unwrap_phase`) and scaled by its own minimum and
    maximum there, so a few outlying pixels (an unconstrained gap, an unwrapping error)
    compress the whole map; SSIM with data range 1, averaged over ``mask``.
    """
    from skimage.restoration import unwrap_phase

    from ptytasks.metrics.errors import ssim

    def unwrapped(z: np.ndarray) -> np.ndarray:
        z = z * np.exp(-1j * np.angle(np.sum(mask * z * np.conj(truth))))
        ph = unwrap_phase(np.ma.masked_array(np.angle(z), mask=~mask)).filled(0.0)
        v = ph[mask]
        return (ph - v.min()) / max(float(v.max() - v.min()), 1e-12)

    return ssim(unwrapped(obj), unwrapped(truth), data_range=1.0, mask=mask)


def field_metrics(obj: np.ndarray, data) -> dict:
    """Quality of a reconstruction against the truth on the illuminated region.

    ``quality_report`` (aligned to the truth) plus ``phase_ssim_papers``
    (:func:`papers_phase_ssim`).
    """
    w, truth = region(data), data.ground_truth["object"]
    rep = quality_report(obj, truth, w)
    return {**{k: float(rep[k]) for k in (*KEYS, "complex_error")},
            "phase_ssim_papers": papers_phase_ssim(np.asarray(obj), truth, w)}  # fmt: skip


def learned(data, model: str = "ppn", preset: str = "default", **kw):
    kw.setdefault("weights", preset)
    return run_engine("learned", data, {"model": model, **kw}, probe_prior=data.probe)


def epie(data, epochs: int = 100, blind: bool = False, fixed: bool = False):
    """ePIE from the true probe (refined), ``fixed`` at it, or ``blind``: from the
    mean-pattern estimate."""
    from ptytasks.calibration import probe_prior

    p0 = probe_prior(data, "mean_pattern") if blind else data.probe
    opts = {"epochs": epochs, "seed": 0, **({"update_probe": False} if fixed else {})}
    return run_engine("epie", data, opts, probe_prior=p0)


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
def part_compare(quick: bool = False, preset: str = "default") -> dict:
    """PPN vs PtychoNN on held-out patches and one held-out stitched scan."""
    from ptytasks.learned.single_shot_data import held_out_batch
    from ptytasks.learned.train_inversion import patch_scores

    out: dict = {}
    nets = {m: load_inversion(preset, model=m) for m in ("ppn", "ptychonn")}
    geo, noise = nets["ppn"].config.geometry, nets["ppn"].config.noise
    x, a, p = held_out_batch(64 if quick else 256, geo, noise, seed=7_000_001,
                             kinds=(REGIMES[preset]["object_kind"],))  # fmt: skip
    scores = {m: patch_scores(net, x, a, p, noise) for m, net in nets.items()}
    out["patches"] = {m: {k: float(v.mean()) for k, v in sc.items()} for m, sc in scores.items()}
    out["paired_difference"] = paired_difference(scores["ppn"], scores["ptychonn"])
    data = dataset(0.6, 49 if quick else 100, seed=101, preset=preset)
    out["field"] = {m: field_metrics(learned(data, m, preset).object, data) for m in nets}
    # counted on the trained networks (loading folds BatchNorm into the convolutions)
    out["parameters"] = {m: n_parameters(load_inversion(preset, model=m, fast=False))
                         for m in nets}  # fmt: skip
    out["train_seconds"] = {m: net.meta.get("train_seconds") for m, net in nets.items()}
    out["train_steps"] = {m: net.meta.get("train", {}).get("steps") for m, net in nets.items()}
    return out


def _overlap_row(overlap: float, n: int, preset: str, dose: float, epochs: int) -> dict:
    """Both networks and the ePIE variants on one held-out scan."""
    data = dataset(overlap, n, seed=202, dose=dose, preset=preset)
    row: dict = {"n_positions": int(data.n_frames), "object_shape": list(data.object_shape),
                 "dose": dose}  # fmt: skip
    for m in ("ppn", "ptychonn"):
        t = time.perf_counter()
        res = learned(data, m, preset)
        row[m] = {**field_metrics(res.object, data), "seconds": time.perf_counter() - t}
    variants = [("epie", {}), ("epie_fixed", {"fixed": True})]
    if preset == "default":
        variants.append(("epie_blind", {"blind": True}))
    for name, kw in variants:
        t = time.perf_counter()
        ep = epie(data, epochs, **kw)
        row[name] = {**field_metrics(ep.object, data), "seconds": time.perf_counter() - t,
                     "epochs": ep.n_epochs}  # fmt: skip
    return row


def part_overlap(quick: bool = False, preset: str = "default", epochs: int = 100) -> dict:
    """PPN, PtychoNN and ePIE at 30 % and 75 % overlap over (about) the same field of view."""
    sizes = ((0.3, 36 if quick else 64), (0.75, 196 if quick else 400))
    return {f"{ov:.2f}": _overlap_row(ov, n, preset, 1e6, 20 if quick else epochs)
            for ov, n in sizes}  # fmt: skip


def part_dose(quick: bool = False, preset: str = "default", epochs: int = 100) -> dict:
    """The 30 %-overlap comparison at lower doses (photons per frame)."""
    return {f"{d:g}": _overlap_row(0.3, 36 if quick else 64, preset, d, 20 if quick else epochs)
            for d in (1e4, 1e5)}  # fmt: skip


def part_epie_regime(quick: bool = False, preset: str = "default", epochs: int = 100) -> dict:
    """ePIE (true probe) at 30 % and 75 % overlap for footprints of 0.35, 0.7 and 0.9 N.

    Where a single frame is oversampled (footprint ``D`` well under ``N / sqrt(2)``) ePIE with
    a known probe needs little overlap; the papers' collapse at low overlap belongs to the
    regime ``D -> N``.
    """
    out: dict = {}
    for frac in (0.35, 0.7, 0.9):
        for ov, n in ((0.3, 36 if quick else 64), (0.75, 196 if quick else 400)):
            data = dataset(ov, n, seed=202, diameter=frac * 32, preset=preset)
            ep = epie(data, 20 if quick else epochs)
            out[f"{frac:.2f}N/{ov:.2f}"] = {"diameter_px": frac * 32, "overlap": ov,
                                            "n_positions": int(data.n_frames),
                                            **field_metrics(ep.object, data)}  # fmt: skip
    return out


def part_speed(quick: bool = False, preset: str = "default", epochs: int = 100,
               repeats: int = 5, threads: int | None = None) -> dict:
    """Learned inference vs ``epochs`` of ePIE on one 1000-position dataset.

    Both run with ``threads`` torch threads (default: every core, as a user would run
    them); ePIE's sequential position updates hardly use a second core, a batched network
    does. The learned time is the median of ``repeats`` complete runs (load the weights,
    predict, stitch); ePIE's is one run of ``epochs`` epochs (long enough to average out
    noise). The learned time at one thread is reported beside.
    """
    old = torch.get_num_threads()
    threads = int(threads or os.cpu_count() or 1)
    data = dataset(0.7, 1024, seed=303, preset=preset)
    load_inversion(preset)  # warm the import and file cache; the timed calls still load it

    def timed_learned(n_threads: int) -> tuple[float, list, dict]:
        torch.set_num_threads(n_threads)
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            res = learned(data, preset=preset)
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
            "speedup_fastest_run": t_epie / min(runs),
            "speedup_learned_1thread": t_epie / t_one,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "epie_final_loss": ep.final_loss}  # fmt: skip


def epochs_to(curve: dict, target: float) -> float | None:
    """Epochs for ``curve`` to reach ``target`` error, log-linearly interpolated (None: never)."""
    e, err = curve["epochs"], np.log(np.asarray(curve["error"]))
    for i in range(len(e)):
        if err[i] <= np.log(target):
            if i == 0:
                return 0.0
            f = (err[i - 1] - np.log(target)) / max(err[i - 1] - err[i], 1e-12)
            return float(e[i - 1] + f * (e[i] - e[i - 1]))
    return None


def rnf_curve(data, prior, ladder: list[int]) -> dict:
    """Complex error of one RNF run (defaults, probe known) after each epoch in ``ladder``.

    One run of ``max(ladder)`` epochs; the engine's rates are constant, so its error after
    ``E`` epochs is that of an ``E``-epoch run.
    """
    truth, mask = data.ground_truth["object"], region(data)
    c = {"epochs": [0], "error": [complex_error(prior, truth, mask)], "seconds": [0.0]}
    t0 = time.perf_counter()

    def record(epoch: int, info: dict) -> None:
        if epoch + 1 in ladder:
            c["epochs"].append(epoch + 1)
            c["error"].append(complex_error(info["object"](), truth, mask))
            c["seconds"].append(time.perf_counter() - t0)

    run_engine("rnf", data, {"epochs": max(ladder), "seed": 0, "learn_probe": False},
               object_prior=prior, probe_prior=data.probe, callback=record)  # fmt: skip
    return c


def part_prior(quick: bool = False, preset: str = "default",
               overlaps: tuple[float, ...] = (0.3, 0.5, 0.75)) -> dict:
    """RNF epochs to a target complex error from the uniform and the learned prior.

    For each overlap, RNF (default options, probe known and fixed) runs from both priors.
    The target is 1.1 times the larger of the two runs' final errors, so both reach it
    (runs that end on the same floor differ there by noise); ``epoch_ratio`` is the
    uniform prior's epochs to it over the learned prior's (``inf`` if the learned object
    starts below it). The target depends on the ladder's length where the uniform run is
    still falling at its end: the ratio is then for that budget of epochs.
    """
    ladder = [2, 4, 8] if quick else [4, 8, 16, 32, 64, 128, 256]
    sizes = {0.3: 64, 0.5: 81, 0.75: 100}
    out: dict = {}
    for ov in overlaps[:1] if quick else overlaps:
        data = dataset(ov, 36 if quick else sizes.get(ov, 64), seed=404, preset=preset)
        priors = {"uniform": np.ones(data.object_shape, np.complex64),
                  "learned": learned(data, preset=preset).object}  # fmt: skip
        curves = {name: rnf_curve(data, prior, ladder) for name, prior in priors.items()}
        target = 1.1 * max(c["error"][-1] for c in curves.values())
        need = {name: epochs_to(c, target) for name, c in curves.items()}
        n_uni, n_lrn = need["uniform"], need["learned"]
        if n_uni is None or n_lrn is None:
            ratio = None  # not reached within the ladder (NaN errors)
        elif n_lrn == 0:
            ratio = math.inf if n_uni > 0 else 1.0  # the learned object alone is below it
        else:
            ratio = n_uni / n_lrn
        out[f"{ov:.2f}"] = {"n_positions": int(data.n_frames), "target_error": target,
                            "curves": curves, "epochs_uniform": need["uniform"],
                            "epochs_learned": need["learned"], "epoch_ratio": ratio}  # fmt: skip
    return out


PARTS = {"compare": part_compare, "overlap": part_overlap, "dose": part_dose,
         "epie_regime": part_epie_regime, "speed": part_speed, "prior": part_prior}  # fmt: skip


# --- report ------------------------------------------------------------------------------------
NOTES = """\
- Held-out data: objects from seeds the training stream never draws (default preset: dead
  leaves, amplitude and phase independent; layout preset: new IC-like layouts, one
  material), raster scans, dose 1e6 photons per frame unless stated, the known zone-plate
  probe (32 x 32 frames). Field metrics: `ptytasks.metrics.quality_report` (aligned to the
  truth; phase SSIM with the reference's lowest phase as black, `phase_ssim`) on pixels
  whose summed `|P|^2` is at least 10 % of its maximum; patch metrics on the patch pixels
  with `|P|^2` >= 10 % of its peak, normalised by the training ranges.
- `phase SSIM (papers)`: the papers' scoring (`papers_phase_ssim`): global phase removed,
  no shift or ramp fit, phase unwrapped, each map min-max normalised over the same pixels.
- `epie`: 100 epochs started from the true probe and refining it (the papers' protocol);
  `epie_fixed`: the probe held at the truth; `epie_blind`: from the mean-pattern estimate.
- Each part records when it finished and the load average then (JSON); `--merge` reruns
  single parts. Which acceptance lines hold, and why not: docs/learned.md.
"""


def _fmt(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _row(name, d):
    return f"| {name} | " + " | ".join(f"{d[k]:.3f}" for k in KEYS) + " |"


HEAD = "| | amp PSNR (dB) | amp SSIM | phase PSNR (dB) | phase SSIM |\n|---|---|---|---|---|"


def _compare_md(c: dict) -> list[str]:
    lines = ["## PPN vs PtychoNN (same training budget, held-out data)", "",
             f"Training steps {c.get('train_steps')}, parameters {c['parameters']}. Held-out "
             "patches (normalised to the training ranges, data range 1; illuminated pixels, "
             "|P|^2 >= 10 % of its peak):", "", HEAD]  # fmt: skip
    lines += [_row(m, c["patches"][m]) for m in c["patches"]]
    lines += ["", "PPN - PtychoNN per patch (mean, 95 % paired bootstrap interval, share of "
              "patches where PPN is better):", "", "| metric | mean | 95 % interval | PPN "
              "better |", "|---|---|---|---|"]  # fmt: skip
    for k, v in c["paired_difference"].items():
        lines.append(f"| {k} | {v['mean']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] "
                     f"| {v['fraction_a_better']:.0%} |")  # fmt: skip
    lines += ["", "Stitched held-out scan (60 % overlap, aligned to the truth):", "", HEAD]
    return lines + [_row(m, c["field"][m]) for m in c["field"]] + [""]


def _rows_md(title: str, rows: dict, label) -> list[str]:
    lines = [title, "", "| scan | method | amp PSNR | amp SSIM | phase PSNR | phase SSIM | "
             "phase SSIM (papers) | s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, d in rows.items():
        if not isinstance(d, dict):
            continue
        for m in ("ppn", "ptychonn", "epie", "epie_fixed", "epie_blind"):
            if m in d:
                v = d[m]
                cells = [f"{v[k]:.3f}" for k in KEYS] + [_fmt(v.get("phase_ssim_papers"), 3)]
                lines.append(f"| {label(key, d)} | {m} | " + " | ".join(cells)
                             + f" | {v['seconds']:.2f} |")  # fmt: skip
    return lines + [""]


def _prior_md(p: dict) -> list[str]:
    lines = ["## RNF prior", "", "Complex error after E epochs (RNF defaults, probe known; "
             "one run per prior); epochs to the target (1.1 x the worse of the two final "
             "errors, so both reach it), log-linearly interpolated between rungs.", ""]
    for ov, d in p.items():
        if not isinstance(d, dict):
            continue
        ep = d["curves"]["uniform"]["epochs"]
        lines += [f"**{float(ov):.0%} overlap** ({d['n_positions']} positions): target "
                  f"{d['target_error']:.4f}; uniform {_fmt(d['epochs_uniform'])} epochs, "
                  f"learned {_fmt(d['epochs_learned'])}: ratio "
                  f"**{_fmt(d['epoch_ratio'], 2)}**.", "",
                  "| prior \\ epochs | " + " | ".join(str(e) for e in ep) + " |",
                  "|---" * (1 + len(ep)) + "|"]  # fmt: skip
        lines += [f"| {n} | " + " | ".join(f"{e:.3f}" for e in c["error"]) + " |"
                  for n, c in d["curves"].items()]  # fmt: skip
        lines.append("")
    return lines


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Learned single-shot inversion, preset `{m.get('preset', 'default')}` "
             f"({m['host']})", "", f"torch {m['torch']}, {m['threads']} thread(s), load "
             f"average {m['load']}; weights: ptytasks/learned/weights/.", ""]  # fmt: skip
    if "compare" in res:
        lines += _compare_md(res["compare"])
    if "overlap" in res:
        lines += _rows_md("## PPN vs ePIE across overlap (stitched field vs truth)",
                          res["overlap"], lambda k, d: f"{float(k):.0%} ({d['n_positions']} pos)")
    if "dose" in res:
        lines += _rows_md("## 30 % overlap at lower dose", res["dose"],
                          lambda k, d: f"dose {k} ({d['n_positions']} pos)")
    if "epie_regime" in res:
        lines += ["## ePIE (true probe) vs probe footprint", "",
                  "| footprint / overlap | positions | phase SSIM | amp SSIM | complex error |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for key, v in res["epie_regime"].items():
            if isinstance(v, dict):
                lines.append(f"| {key} | {v['n_positions']} | {v['phase_ssim']:.3f} | "
                             f"{v['amp_ssim']:.3f} | {v['complex_error']:.3f} |")
        lines.append("")
    if "speed" in res:
        s = res["speed"]
        lines += ["## Speed (one run)", "",
                  f"{s['n_positions']} positions, {s['threads']} torch thread(s) for both: "
                  f"learned {s['learned_seconds']:.2f} s (median of {len(s['learned_runs'])}: "
                  f"load, predict, stitch; fastest {min(s['learned_runs']):.2f} s), "
                  f"ePIE {s['epie_epochs']} epochs {s['epie_seconds']:.1f} s "
                  f"({s['epie_epochs_run']} run): **{s['speedup']:.0f}x**. Learned at one "
                  f"thread: {s['learned_seconds_1thread']:.2f} s, "
                  f"{s['speedup_learned_1thread']:.0f}x.", ""]  # fmt: skip
    if "prior" in res:
        lines += _prior_md(res["prior"])
    return "\n".join(lines + ["## Notes", "", NOTES])


def main(argv=None) -> dict:
    from ptytasks.learned.inversion import PRESETS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--preset", default="default", choices=PRESETS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--merge", action="store_true",
                    help="update these parts in an existing results file, keep the others")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    host = "vm" if not os.environ.get("BENCH_HOST") else os.environ["BENCH_HOST"]
    res: dict = {"machine": {"host": host, "torch": torch.__version__, "preset": args.preset,
                             "python": platform.python_version(),
                             "threads": torch.get_num_threads(),
                             "load": [round(x, 2) for x in os.getloadavg()]}}  # fmt: skip
    stem = "learned" if args.preset == "default" else f"learned-{args.preset}"
    out = args.out or REPO / "bench" / "results" / f"{stem}-{host}.json"
    if args.merge and out.is_file():
        res = {**json.loads(out.read_text()), "machine": res["machine"]}
    for name in args.parts.split(","):
        t = time.perf_counter()
        res[name] = PARTS[name](quick=args.quick, preset=args.preset)
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
