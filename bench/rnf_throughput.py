"""Throughput scenario of ``bench/bench_rnf.py``: frames per second of full RNF epochs.

``throughput`` times each (batch size, evaluation region, hash level policy)
configuration against the batched-FFT floor (``fft_floor``) and, with ``compare``, against
the pre-speed-work kernels (``reference_kernels``) run right before it in the same
process, reporting wall and process-CPU seconds per epoch (``_run_epochs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import numpy as np
import torch

from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.simulate.datasets import simulate


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
