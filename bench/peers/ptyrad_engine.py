"""PtyRAD (``ptyrad``) driven on a ptyflow far-field job.

PtyRAD's own conventions match ptyflow's far field (unitary FFT, centred patterns via
``fftshift``; positions are window top-left corners ``crop_pos + probe_pos_shifts`` in
object pixels), so frames, probe, positions and the starting object pass unchanged through
its ``custom`` sources. PtyRAD is written for electron ptychography: with the pixel size
given directly (``meas_calibration: {mode: dx}``) a single-slice reconstruction is the same
Fraunhofer model whatever the radiation, so the job is declared ``electron`` with dummy
optics (only used for logs and probe simulation, which a custom probe skips). Its X-ray
initialisation path in 1.0.0 reads keys its own parameter schema does not define
(``probe_N_scan_slow``), hence this choice.

The solver's parameters are validated and filled by PtyRAD's schema (``PtyRADParams``);
the benchmark then runs PtyRAD's own ``recon_step`` one iteration at a time (the body of its
``recon_loop``, without file output) to time each epoch and snapshot the object.
"""

from __future__ import annotations

import logging
import tempfile
import time

import numpy as np
import torch

# PtyRAD's defaults are Adam at 5e-4 (object) / 1e-4 (probe) for hundreds of iterations of
# electron data; on the benchmark's X-ray-like phase objects and tens of epochs a larger
# object rate converges much further (chosen on the simulated set; docs/benchmarks.md).
# Adam moves each value by about lr per step, so what matters is the number of steps:
# epochs * n / batch. The batch is capped so that every epoch has at least
# ``min_batches`` steps (16 at the 100-frame set, 4 when 25 frames are kept).
DEFAULTS = {"batch_size": 16, "min_batches": 6, "obj_lr": 5e-3, "probe_lr": 1e-3,
            "optimizer": "Adam"}


def _batch_size(n: int, s: dict) -> int:
    """``batch_size``, capped at ``n // min_batches`` (at least 1) and at ``n``."""
    cap = max(1, n // max(1, int(s.get("min_batches", 1))))
    return int(max(1, min(int(s["batch_size"]), cap, n)))


def _params(job: dict, arrays: dict, s: dict, outdir: str) -> dict:
    frames = np.asarray(arrays["frames"], np.float32)
    n, ny, nx = frames.shape
    if ny != nx:
        raise ValueError("PtyRAD needs square frames")
    probe = np.asarray(arrays["probe"], np.complex64)[None]
    shape = tuple(int(v) for v in job["object_shape"])
    obj0 = arrays.get("object_init")
    obj0 = np.ones(shape, np.complex64) if obj0 is None else np.asarray(obj0, np.complex64)
    learn_probe = bool(job.get("learn_probe", True))
    return {
        "init_params": {
            "random_seed": int(job.get("seed", 0)),
            "probe_illum_type": "electron",
            "probe_kv": 300.0,
            "probe_conv_angle": 20.0,
            "meas_Npix": int(ny),
            "pos_N_scans": int(n),
            "pos_N_scan_slow": 1,
            "pos_N_scan_fast": int(n),
            "pos_scan_step_size": 1.0,
            "meas_calibration": {"mode": "dx", "value": 1.0},
            "probe_pmode_max": 1,
            "obj_omode_max": 1,
            "obj_Nlayer": 1,
            "obj_slice_thickness": 1.0,
            "meas_flipT": None,
            "meas_source": "custom",
            "meas_params": frames,
            "probe_source": "custom",
            "probe_params": probe,
            "pos_source": "custom",
            "pos_params": np.asarray(arrays["positions_px"], np.float64),
            # PtyRAD's schema default (0.15) adds N(0, 0.15 px) noise per axis to the given
            # positions (meant against raster-grid pathology); with positions fixed it is
            # never undone, so the forward model would use jittered positions.
            "pos_scan_rand_std": None,
            "obj_source": "custom",
            "obj_params": obj0[None, None],
        },
        "model_params": {
            "optimizer_params": {"name": s["optimizer"], "configs": {}},
            "update_params": {
                "obja": {"start_iter": 1, "lr": float(s["obj_lr"])},
                "objp": {"start_iter": 1, "lr": float(s["obj_lr"])},
                "probe": (
                    {"start_iter": 1, "lr": float(s["probe_lr"])}
                    if learn_probe
                    else {"start_iter": None, "lr": 0.0}
                ),
                "probe_pos_shifts": {"start_iter": None, "lr": 0.0},
            },
        },
        "constraint_params": {
            # On by default (start_iter 1): subtracts the mean sub-pixel residual from every
            # position after each epoch, i.e. moves the given positions even when fixed.
            "pos_recenter": {"start_iter": None},
        },
        "recon_params": {
            "NITER": int(job["epochs"]),
            "BATCH_SIZE": {"size": _batch_size(n, s), "grad_accumulation": 1},
            "GROUP_MODE": "random",
            "SAVE_ITERS": None,
            "output_dir": outdir,
        },
    }


def run(job: dict, arrays: dict, snapshot) -> dict:
    from ptyrad.core import PtychoModel
    from ptyrad.params.ptyrad_params import PtyRADParams
    from ptyrad.solver import PtyRADSolver
    from ptyrad.solver.reconstruction import (
        compute_loss,
        create_optimizer,
        create_scheduler,
        make_batches,
        recon_step,
        toggle_grad_requires,
    )

    for name in ("ptyrad", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    s = {**DEFAULTS, **job.get("settings", {})}
    device = "cuda" if str(job.get("device", "cpu")).startswith("cuda") else "cpu"
    with tempfile.TemporaryDirectory(prefix="ptyrad-") as outdir:
        raw = _params(job, arrays, s, outdir)
        t0 = time.perf_counter()
        params = PtyRADParams(**raw).model_dump()
        # The schema may copy arrays; put the custom arrays back as given.
        for k in ("meas_params", "probe_params", "pos_params", "obj_params"):
            params["init_params"][k] = raw["init_params"][k]
        solver = PtyRADSolver(params, device=device, seed=int(job.get("seed", 0)))
        model = PtychoModel(solver.init.init_variables, params["model_params"], device=device)
        optimizer = create_optimizer(model.optimizer_params, model.optimizable_params)
        scheduler = create_scheduler(model.scheduler_params, optimizer)
        pos = (model.crop_pos + model.opt_probe_pos_shifts).detach().cpu().numpy()
        indices = np.arange(len(pos))
        batches = make_batches(
            indices,
            pos,
            params["recon_params"]["BATCH_SIZE"]["size"],
            mode="random",
            seed=int(job.get("seed", 0)),
        )
        batches = [torch.from_numpy(np.asarray(b)).to(device=device) for b in batches]
        setup_s = time.perf_counter() - t0
        epoch_times, losses = [], []
        want = set(int(e) for e in job.get("snapshot_epochs", []))

        def current_object():
            with torch.no_grad():
                o = model.opt_obja * torch.exp(1j * model.opt_objp)
            return o.detach().cpu().numpy().reshape(-1, *o.shape[-2:])[0]

        for niter in range(1, int(job["epochs"]) + 1):
            t = time.perf_counter()
            toggle_grad_requires(model, niter)
            batch_losses = recon_step(
                batches,
                1,
                model,
                optimizer,
                scheduler,
                solver.loss_fn,
                solver.constraint_fn,
                niter,
                compute_loss_fn=compute_loss,
            )
            if device == "cuda":
                torch.cuda.synchronize()
            epoch_times.append(time.perf_counter() - t)
            try:
                losses.append(float(np.mean([np.mean(v) for v in batch_losses.values()])))
            except Exception:  # noqa: BLE001
                losses.append(float("nan"))
            if niter in want:
                snapshot(niter, current_object(), sum(epoch_times))
        obj = current_object()
        with torch.no_grad():
            pr = model.get_complex_probe_view().detach().cpu().numpy()
    return {
        "object": obj.astype(np.complex64),
        "probe": pr.reshape(-1, *pr.shape[-2:])[0].astype(np.complex64),
        "epoch_times": epoch_times,
        "loss_history": losses,
        "setup_s": setup_s,
        "settings": s,
        "notes": "declared 'electron' with dx=1 (single slice: the same Fraunhofer model)"
                 + _mask_note(arrays.get("valid_pixel_mask")),
    }


def _mask_note(mask) -> str:
    """What PtyRAD does with the dataset's detector mask: it has no option to leave pixels
    out of its loss, so it fits them all (ptyflow's engines and pty-chi do not)."""
    if mask is None:
        return ""
    n = int((~np.asarray(mask, bool)).sum())
    return f"; fits every detector pixel (no detector-mask option): the dataset masks {n}"
