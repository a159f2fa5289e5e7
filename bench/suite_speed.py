"""Speed: time per epoch and time to a given error, against the machine's FFT floor.

One simulated far-field set (all frames, true probe as prior so every engine converges
towards the same answer), every engine with the same torch thread count, run back to back
in one process run (peers in their own subprocesses; import and setup excluded). The floor
is measured in the same run, before and after the engines: a reconstruction epoch must at
least propagate every frame to the detector and back, two 2-D FFTs per frame at the frame
size, so ``floor = t(fft2 + ifft2 of all frames, complex64, batched)`` on this CPU (or GPU)
with the same threads. Each engine's steady epoch time is reported as a multiple of it.

Time to error: the cumulative epoch time at the first snapshot whose aligned complex error
is at or below each target (``--targets``). Writes ``results/speed-<device>[-quick].json``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench import suite_common as C

FULL = {"frame_size": 128, "n_positions": 200, "overlap": 0.75, "epochs": 60}
QUICK = {"frame_size": 64, "n_positions": 100, "overlap": 0.65, "epochs": 15}
GPU = {"frame_size": 256, "n_positions": 1000, "overlap": 0.75, "epochs": 60}
TARGETS = (0.3, 0.2, 0.1, 0.05)


def add_args(p) -> None:
    p.add_argument("--speed-epochs", type=int, help="epochs per engine (override)")
    p.add_argument("--frame-size", type=int, help="frame side, pixels (override)")
    p.add_argument(
        "--targets",
        type=float,
        nargs="*",
        default=list(TARGETS),
        help="complex-error targets for time-to-error",
    )


def fft_floor(
    n_frames: int, shape: tuple[int, int], *, threads: int, device: str = "cpu", reps: int = 7
) -> dict:
    """Seconds for ``fft2`` + ``ifft2`` of ``n_frames`` frames (one epoch's minimum)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        dev = torch.device(device)
        x = torch.randn(n_frames, *shape, dtype=torch.complex64, device=dev)
        sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
        for _ in range(2):  # warm-up: plans, allocations
            torch.fft.ifft2(torch.fft.fft2(x))
        sync()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.fft.ifft2(torch.fft.fft2(x))
            sync()
            ts.append(time.perf_counter() - t0)
        # And frame by frame (what a sequential PIE must do at best).
        seq = []
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(n_frames):
                torch.fft.ifft2(torch.fft.fft2(x[i]))
            sync()
            seq.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return {
        "batched_s_min": min(ts),
        "batched_s_median": statistics.median(ts),
        "sequential_s_min": min(seq),
        "n_frames": n_frames,
        "shape": list(shape),
        "threads": threads,
    }


def run(args) -> dict:
    g = dict(
        GPU if args.device.startswith("cuda") and not args.quick else QUICK if args.quick else FULL
    )
    if getattr(args, "speed_epochs", None):
        g["epochs"] = int(args.speed_epochs)
    if getattr(args, "frame_size", None):
        g["frame_size"] = int(args.frame_size)
    engines = C.engine_list(args, "farfield")
    head = C.run_header("speed", args)
    head.update(grid=g, engines=engines["run"], skipped_engines=engines["skipped"])
    path = C.result_path("speed", args.device, args.quick, args.out, getattr(args, "tag", None))
    data = C.farfield_dataset(
        frame_size=g["frame_size"],
        n_positions=g["n_positions"],
        overlap=g["overlap"],
        dose=None,
        seed=0,
    )
    probe = C.probe_prior(data, "true")
    truth = data.ground_truth["object"]
    mask = C.illuminated(data)
    shape = data.frame_shape
    C.log(f"speed: FFT floor, {data.n_frames} frames of {shape}")
    floor_before = fft_floor(data.n_frames, shape, threads=args.threads, device=args.device)
    snaps = sorted(set(C.snapshot_epochs(g["epochs"], 10)))
    rows = []
    for name in engines["run"]:
        C.log(f"speed: {name} ({g['epochs']} epochs, {args.threads} thread(s))")
        rec = C.run_engine_timed(
            name,
            data,
            epochs=g["epochs"],
            probe=probe,
            threads=args.threads,
            device=args.device,
            snapshots=snaps,
            settings=C.engine_settings(args, name),
        )
        row = {"engine": name, "ok": bool(rec.get("ok"))}
        if rec.get("ok"):
            row["times"] = C.summarise_times(rec)
            row["curve"] = C.error_curve(rec, truth, mask)
            row["final_error"] = (
                row["curve"][-1]["error"]
                if row["curve"]
                else C.error_only(rec["object"], truth, mask)
            )
            row["time_to_error"] = time_to_error(row["curve"], args.targets)
            row["settings"] = rec.get("settings")
            C.log(
                f"  -> {row['times'].get('epoch_s_median', float('nan')):.4f} s/epoch, "
                f"final error {row['final_error']:.4f}"
            )
        else:
            row["error_message"] = rec.get("error")
            C.log(f"  -> FAILED: {rec.get('error')}")
        rows.append(row)
        C.write_json(path, {**head, "floor_before": floor_before, "rows": rows, "partial": True})
    floor_after = fft_floor(data.n_frames, shape, threads=args.threads, device=args.device)
    floor = min(floor_before["batched_s_min"], floor_after["batched_s_min"])
    for r in rows:
        if r.get("times"):
            r["times"]["x_fft_floor"] = r["times"]["epoch_s_median"] / floor
    out = {
        **head,
        "floor_before": floor_before,
        "floor_after": floor_after,
        "fft_floor_s": floor,
        "rows": rows,
        "partial": False,
        "headline": headline(rows, floor),
    }
    C.write_json(path, out)
    return out


def time_to_error(curve: list[dict], targets) -> dict:
    out = {}
    for t in targets:
        hit = next((c for c in curve if np.isfinite(c["error"]) and c["error"] <= t), None)
        out[f"{t:g}"] = None if hit is None else {"seconds": hit["seconds"], "epoch": hit["epoch"]}
    return out


def headline(rows: list[dict], floor: float) -> dict:
    t = {r["engine"]: r["times"]["epoch_s_median"] for r in rows if r.get("times")}
    out = {"fft_floor_s": floor, "epoch_s": t}
    chi = {k: v for k, v in t.items() if k.startswith("ptychi-")}
    if chi:
        fastest = min(chi, key=chi.get)
        out["ptychi_fastest"] = fastest
        out["ptychi_fastest_epoch_s"] = chi[fastest]
    if C.SUBJECT in t:
        out["rnf_x_fft_floor"] = t[C.SUBJECT] / floor
        if chi:
            out["rnf_x_ptychi_fastest"] = t[C.SUBJECT] / chi[out["ptychi_fastest"]]
    return out
