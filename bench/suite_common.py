"""Shared pieces of the benchmark suites: datasets, priors, engine runs, metrics, output.

Every engine -- ptyflow's ``rnf``, ``epie``, ``rpie`` (in this process, through
:func:`ptytasks.engines.registry.run_engine`) and the peers (each in its own process,
:mod:`bench.peers`) -- runs through :func:`run_engine_timed`, which returns one record:
the final object, the per-epoch compute times (setup, imports and snapshot copies
excluded), and object snapshots at chosen epochs, so time-to-error curves are measured the
same way for all engines. Errors are computed here, in one place, with
:mod:`ptytasks.metrics` against the ground truth over the region the kept frames light.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from ptytasks.engines.registry import DEFAULT_ENGINE

RESULTS = Path(__file__).resolve().parent / "results"
OURS = ("rnf", "epie", "rpie", "pine")
#: The engine the headlines are about: the product's default.
SUBJECT = DEFAULT_ENGINE


# ----------------------------------------------------------------------------- machine
def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run_header(suite: str, args) -> dict:
    """Machine, versions, load and the suite's parameters, recorded with every result."""
    from bench import peers
    from bench._machine import machine_info

    info = machine_info(
        packages=(
            "numpy",
            "scipy",
            "torch",
            "dask",
            "distributed",
            "prefect",
            "zarr",
            "matplotlib",
            "ptyflow",
        )
    )
    head = {
        "suite": suite,
        "machine": info,
        "load_average_start": load_average(),
        "device": args.device,
        "quick": bool(args.quick),
        "threads": args.threads,
        "args": {k: v for k, v in vars(args).items() if k != "func"},
    }
    if not getattr(args, "no_peers", False):
        p = peers.probe()
        head["peers"] = {
            "interpreter": p.get("interpreter"),
            "shim": p.get("shim"),
            "packages": p.get("peers", {}),
            "error": p.get("error"),
        }
    else:
        head["peers"] = {"disabled": True}
    head["python_impl"] = platform.python_implementation()
    return head


def result_path(
    suite: str, device: str, quick: bool, out_dir: Path | None = None, tag: str | None = None
) -> Path:
    """``bench/results/<suite>-<device>[-quick][-<tag>].json`` (device-labelled)."""
    d = Path(out_dir) if out_dir else RESULTS
    d.mkdir(parents=True, exist_ok=True)
    dev = str(device).split(":")[0]
    return d / f"{suite}-{dev}{'-quick' if quick else ''}{'-' + tag if tag else ''}.json"


def write_json(path: Path, payload: dict) -> Path:
    payload = dict(payload)
    payload["load_average_end"] = load_average()
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default, allow_nan=True))
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o)}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data
def farfield_dataset(
    *, frame_size: int, n_positions: int, overlap: float, dose: float | None, seed: int = 0
):
    """The simulated far-field set of the quality and speed suites (zone-plate probe,
    Fermat spiral, 'camera' object with 0.8-1 amplitude and 0-pi/2 phase)."""
    from ptytasks.simulate import simulate

    return simulate("farfield", frame_size=frame_size, n_positions=n_positions,
                    overlap=overlap, dose=dose, seed=seed)  # fmt: skip


def probe_prior(data, kind: str = "defocus:1.1") -> np.ndarray:
    """The probe every engine starts from.

    ``"true"``: the true probe. ``"defocus:F"``: the simulator's zone-plate probe with its
    defocus scaled by ``F`` (a probe from a slightly wrong focus position, as from a
    beamline's nominal optics); all engines then refine it. Scaled to the true power.
    """
    gt = data.ground_truth
    true = np.asarray(gt["probe"])
    if kind == "true":
        return true.astype(np.complex64)
    if not kind.startswith("defocus:"):
        raise ValueError(f"unknown probe prior {kind!r}")
    factor = float(kind.split(":", 1)[1])
    from ptytasks.simulate import simulated_zone_plate

    p = simulated_zone_plate(data.frame_shape, gt["pixel_size"], gt["wavelength"],
                             data.meta["probe_diameter_px"], factor).numpy()
    p = p * math.sqrt(np.sum(np.abs(true) ** 2) / max(np.sum(np.abs(p) ** 2), 1e-30))
    return p.astype(np.complex64)


def illuminated(data, positions=None, frac: float = 0.1) -> np.ndarray:
    """Object pixels lit by more than ``frac`` of the peak (true-probe) coverage of the
    frames in ``data`` (the kept frames: metrics are judged where data exist)."""
    import torch

    from ptytasks.physics.shifts import coverage

    gt = data.ground_truth
    probe = np.asarray(gt["probe"]) if gt is not None else np.asarray(data.probe)
    w = torch.as_tensor(np.abs(probe) ** 2, dtype=torch.float64)
    pos = (
        positions
        if positions is not None
        else (
            gt["positions_px"]  # a subset's truth holds its own frames (PtychoData.subset)
            if gt is not None and "positions_px" in gt
            else data.positions_px
        )
    )
    c = coverage(
        torch.as_tensor(np.asarray(pos, np.float64)), data.frame_shape, data.object_shape, w
    ).numpy()
    return c > frac * float(c.max())


def quality(obj, truth, mask, *, threshold=0.5, band_limit=None) -> dict:
    """:func:`ptytasks.metrics.quality_report` (FRC against the truth at ``threshold``,
    searched below ``band_limit`` c/px where given)."""
    from ptytasks.metrics import quality_report

    if obj is None or not np.all(np.isfinite(obj)):
        return {"complex_error": float("nan")}
    rep = quality_report(obj, truth, mask, threshold=threshold, band_limit=band_limit)
    keep = ("complex_error", "amp_psnr", "amp_ssim", "phase_psnr", "phase_ssim", "frc_resolution")
    return {k: float(rep[k]) for k in keep}


def error_only(obj, truth, mask) -> float:
    from ptytasks.metrics import complex_error

    if obj is None or not np.all(np.isfinite(obj)):
        return float("nan")
    try:
        return float(complex_error(obj, truth, mask))
    except Exception:  # noqa: BLE001 - a diverged snapshot must not end the suite
        return float("nan")


def snapshot_epochs(epochs: int, n: int = 8) -> list[int]:
    """About ``n`` roughly log-spaced epochs in ``1..epochs`` (always the last)."""
    if epochs <= 0:
        return []
    e = np.unique(np.round(np.geomspace(1, epochs, num=min(n, epochs))).astype(int))
    return sorted(set(int(v) for v in e) | {int(epochs)})


# ----------------------------------------------------------------------------- engines
def default_settings(engine: str, epochs: int, *, quick: bool = False) -> dict:
    """Per-engine settings of the suites (documented in docs/benchmarks.md).

    ptyflow engines: their defaults (rPIE/ePIE sequential, RNF's paper defaults), probe
    refinement on, fixed positions. Peers: see ``bench/peers/*_engine.py``'s ``DEFAULTS``.
    """
    s = {"epochs": int(epochs), "learn_probe": True, "learn_positions": False, "seed": 0}
    return s


def run_ours(
    name: str,
    data,
    settings: dict,
    *,
    probe,
    object_init=None,
    threads: int = 1,
    device: str = "cpu",
    snapshots=(),
) -> dict:
    """A ptyflow engine in this process, timed like the peers."""
    import torch

    from ptytasks.engines.registry import option_names, run_engine

    s = dict(settings)
    s.setdefault("device", device)
    if "cpu_threads" in option_names(name):
        s.setdefault("cpu_threads", int(threads))
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    want = set(int(e) for e in snapshots)
    snaps, snap_t, times, losses = {}, {}, [], []

    def cb(epoch, info):
        times.append(float(info.get("time", float("nan"))))
        losses.append(float(info.get("loss", float("nan"))))
        e = epoch + 1
        if e in want:
            obj = info.get("object")
            # RNF hands a callable (the field is evaluated only when asked); PIE a tensor.
            obj = obj() if callable(obj) else obj
            if obj is not None:
                if hasattr(obj, "detach"):
                    obj = obj.detach().cpu().numpy()
                snaps[e] = np.array(obj, np.complex64)
                snap_t[e] = float(np.nansum(times))

    t0 = time.perf_counter()
    try:
        res = run_engine(name, data, s, probe_prior=probe, object_prior=object_init, callback=cb)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        out = {
            "ok": True,
            "object": res.object,
            "probe": res.probe,
            "epoch_times": times,
            "loss_history": losses,
            "wall_s": wall,
            "setup_s": max(0.0, float(res.timings.get("total", wall)) - float(np.nansum(times))),
            "import_s": 0.0,
            "snapshots": snaps,
            "snapshot_seconds": snap_t,
            "settings": {k: v for k, v in s.items() if not k.startswith("_")},
        }
    except Exception as exc:  # noqa: BLE001 - reported per engine
        out = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "wall_s": time.perf_counter() - t0,
        }
    finally:
        torch.set_num_threads(old)
    return out


def run_engine_timed(
    name: str,
    data,
    *,
    epochs: int,
    probe,
    object_init=None,
    threads: int = 1,
    device: str = "cpu",
    snapshots=(),
    settings=None,
    seed: int = 0,
    peer_timeout: float = 3600,
) -> dict:
    """One engine run (ours in-process, a peer in its own process), one record format.

    ``seed`` seeds every engine's initialisation and frame order (half-data FRC gives the
    two halves different seeds, so no initial pattern is shared between them)."""
    if name in OURS:
        s = default_settings(name, epochs)
        s["seed"] = int(seed)
        s.update(settings or {})
        rec = run_ours(
            name,
            data,
            s,
            probe=probe,
            object_init=object_init,
            threads=threads,
            device=device,
            snapshots=snapshots,
        )
    else:
        from bench import peers
        from ptytasks.modalities import modality_of

        job = {
            "epochs": int(epochs),
            "object_shape": list(data.object_shape),
            "threads": int(threads),
            "device": device,
            "seed": int(seed),
            "snapshot_epochs": list(snapshots),
            "learn_probe": True,
            "modality": data.modality,
            "far_field": modality_of(data).far_field_detector,
            "distance": data.distance,
            "wavelength": data.wavelength,
            "pixel_size": data.pixel_size,
            "settings": dict(settings or {}),
        }
        from ptytasks.engines.pie_state import detector_mask_of

        arrays = {
            "frames": np.asarray(data.frames, np.float32),
            "positions_px": np.asarray(data.positions_px, np.float64),
            "probe": np.asarray(probe, np.complex64),
            # the pixels ptyflow's engines fit (a file's bad pixels, ingest's artefacts):
            # a peer that can leave pixels out is given the same ones
            "valid_pixel_mask": detector_mask_of(data.meta),
        }
        if object_init is not None:
            arrays["object_init"] = np.asarray(object_init, np.complex64)
        rec = peers.run_peer(name, job, arrays, timeout=peer_timeout)
        if rec.get("ok") and "snapshot_seconds" in rec:
            eps = sorted(rec["snapshots"])
            rec["snapshot_seconds"] = dict(zip(eps, rec["snapshot_seconds"], strict=False))
    rec["engine"] = name
    return rec


def summarise_times(rec: dict) -> dict:
    t = [v for v in rec.get("epoch_times", []) if np.isfinite(v)]
    if not t:
        return {}
    # The first epoch carries warm-up (allocations, lazy initialisation); the steady
    # epoch time is the median of the rest.
    steady = t[1:] if len(t) > 2 else t
    return {
        "epoch_s_median": float(np.median(steady)),
        "epoch_s_min": float(np.min(steady)),
        "epoch_s_first": float(t[0]),
        "epochs_run": len(t),
        "compute_s": float(np.sum(t)),
        "setup_s": float(rec.get("setup_s", 0.0)),
        "import_s": float(rec.get("import_s", 0.0)),
        "wall_s": float(rec.get("wall_s", 0.0)),
    }


def error_curve(rec: dict, truth, mask) -> list[dict]:
    """``[{epoch, seconds, error}]`` from a record's snapshots (seconds: cumulative epochs)."""
    out = []
    for e in sorted(rec.get("snapshots", {})):
        out.append(
            {
                "epoch": int(e),
                "seconds": float(rec["snapshot_seconds"].get(e, np.nan)),
                "error": error_only(rec["snapshots"][e], truth, mask),
            }
        )
    return out


def strip_arrays(rec: dict) -> dict:
    """The JSON-able part of a record."""
    return {
        k: v
        for k, v in rec.items()
        if k not in ("object", "probe", "snapshots", "snapshot_seconds", "traceback")
    }


# ----------------------------------------------------------------------------- selection
# Benchmark-level settings on top of each engine's defaults (recorded with every result):
# none. Every engine runs its own defaults in the older suites (quality, speed, realdata);
# ``--settings ENGINE:JSON`` overrides for one run. Until 2026-12-06 RNF ran here with
# lr 1e-2 and one rate for tables and MLP, a rate chosen on the quality suite's own 25 %
# set -- a setting tuned on the data it was scored on, and not RNF's defaults (issue #19:
# no per-scenario settings in benchmarks).
BENCH_SETTINGS: dict[str, dict] = {}


def engine_settings(args, name: str) -> dict:
    s = dict(BENCH_SETTINGS.get(name, {}))
    for item in getattr(args, "settings", None) or []:
        eng, _, js = item.partition(":")
        if eng == name:
            s.update(json.loads(js))
    return s


def engine_list(args, modality: str, quick_engines: tuple[str, ...] | None = None) -> dict:
    """Engines to run for ``modality``: ``{"run": [...], "skipped": {name: reason}}``."""
    from bench import peers

    wanted = list(getattr(args, "engines", None) or [])
    skipped: dict[str, str] = {}
    names = list(OURS) + list(peers.PEER_ENGINES)
    if wanted:
        names = [n for n in names if n in wanted]
    elif quick_engines is not None and args.quick:
        for n in names:
            if n not in quick_engines:
                skipped[n] = "not in the --quick selection for this suite"
        names = [n for n in names if n in quick_engines]
    avail = {} if getattr(args, "no_peers", False) else peers.available()
    run = []
    for n in names:
        if n in OURS:
            run.append(n)
            continue
        if getattr(args, "no_peers", False):
            skipped[n] = "--no-peers"
        elif not avail.get(n):
            err = peers.probe().get("peers", {}).get(peers.PEER_ENGINES[n][0], {}).get("error")
            skipped[n] = (
                f"peer not installed or not importable ({err or 'missing'}); "
                "run bench/install_peers.sh"
            )
        elif not peers.supports(n, modality):
            skipped[n] = f"does not model {modality} data"
        else:
            run.append(n)
    return {"run": run, "skipped": skipped}


# ----------------------------------------------------------------------------- previews
def phase_panel(objects: dict, truth, mask, path: Path, *, title: str = "") -> Path | None:
    """Side-by-side aligned phase images (truth first when given) over the mask's box."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ptytasks.metrics import amplitude_phase
    except ImportError:
        return None
    m = np.asarray(mask, bool)
    rows = np.flatnonzero(m.any(1))
    cols = np.flatnonzero(m.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    panels = []
    if truth is not None:
        _, _, _, ph_ref = amplitude_phase(truth, truth, m)
        panels.append(("truth", ph_ref))
    for name, obj in objects.items():
        try:
            if truth is not None:
                _, _, ph, _ = amplitude_phase(obj, truth, m)
            else:
                ph = np.angle(obj * np.exp(-1j * np.angle(np.sum(obj[m]))))
        except Exception:  # noqa: BLE001
            continue
        panels.append((name, ph))
    if not panels:
        return None
    ref_lo, ref_hi = np.percentile(panels[0][1][box][m[box]], [1, 99])
    n = len(panels)
    cols_n = min(n, 5)
    rows_n = int(np.ceil(n / cols_n))
    fig, axes = plt.subplots(rows_n, cols_n, figsize=(2.6 * cols_n, 2.8 * rows_n), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, ph) in zip(axes.ravel(), panels, strict=False):
        img = np.where(m, ph, np.nan)[box]
        # With a truth every panel shares its range; without one each gets its own.
        lo, hi = (ref_lo, ref_hi) if truth is not None else np.nanpercentile(img, [1, 99])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
