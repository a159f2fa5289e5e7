"""pty-chi (``ptychi``) engines driven on a ptyflow job: ePIE, rPIE, LSQML, Autodiff.

Conventions bridged (ptyflow's are in ``docs/conventions.md``):

* frames: ptyflow stores them centred; pty-chi's ``fft_shift=True`` moves the zero
  frequency to the corner its forward model predicts;
* FFT scale: pty-chi's far-field propagator is the unnormalised FFT, ptyflow's is unitary,
  so the same counts need the probe divided by ``sqrt(Ny Nx)`` (multiplied back on output);
* positions: pty-chi takes patch *centres* relative to ``position_origin_coords``; a ptyflow
  window corner ``c`` has its centre at ``c + (N - 1) / 2`` on the object array. pty-chi's
  PIE/LSQML forward model and updates snap a centre to ``round(p) + origin`` and then take
  the window start ``round(centre - (N - 1) / 2)``, shifting the probe by ``p - round(p)``;
  for even ``N`` that start is only exact when the origin is a half-integer (its own
  default origin, ``round(shape / 2) - 0.5``, always is). With an integer origin the second
  ``round`` meets an exact ``.5`` and torch's round-half-to-even moves every window by
  +-0.5 px per axis (a parity-dependent jitter: 12 % frame misfit with the true object and
  probe). So the origin is ``((N - 1) / 2) mod 1`` (0.5 for even, 0 for odd ``N``) and the
  positions ``c + (N - 1) / 2 - origin``: the window start is ``c`` exactly and the object
  stays on ptyflow's grid (``SPECIFIED``);
* near field: pty-chi's angular-spectrum propagator over ``distance`` with ``fft_shift``
  off (its far-field shift does not apply). pty-chi 2.2.0 silently swaps in its single-FFT
  ``FresnelTransformPropagator`` when ``pixel^2 / (wavelength distance) < 1 / N``
  (``WavefieldPropagatorParameters.is_fresnel_transform_preferrable``), which puts the
  detector on a ``wavelength distance / (N pixel)`` grid with another intensity scale;
  ptyflow's frames sit on the object-pixel grid (the Fresnel-scaling geometry), so the
  bridge keeps the angular spectrum (98 % -> 5e-7 frame misfit with the true object and
  probe at integer corners). Sub-pixel corners stay a model difference: pty-chi shifts the
  probe, which in the near field translates its hologram by the fractional part (15 %).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

# Per-engine settings: pty-chi's step rules with its documented alphas (ePIE 1, rPIE 0.1),
# batch sizes and the Autodiff optimiser chosen by a small sweep on the benchmark's simulated
# far-field set (100 frames, 20 epochs, true probe; docs/benchmarks.md lists the sweep):
# batch 4 beat 1 and 16 for ePIE/rPIE/LSQML; Adam 3e-2 beat SGD 0.1 and Adam 1e-2 for
# Autodiff.
DEFAULTS = {
    "epie": {
        "batch_size": 4,
        "object_step": 1.0,
        "object_alpha": 1.0,
        "probe_step": 1.0,
        "probe_alpha": 1.0,
    },
    "rpie": {
        "batch_size": 4,
        "object_step": 1.0,
        "object_alpha": 0.1,
        "probe_step": 1.0,
        "probe_alpha": 0.1,
    },
    "lsqml": {"batch_size": 4, "object_step": 1.0, "probe_step": 1.0},
    "autodiff": {"batch_size": 8, "object_step": 3e-2, "probe_step": 3e-3, "optimizer": "adam"},
}


# pty-chi engine -> (its options class in ``ptychi.api``, whether it takes PIE's alphas)
_OPTIONS = {
    "epie": ("EPIEOptions", True),
    "rpie": ("RPIEOptions", True),
    "lsqml": ("LSQMLOptions", False),
    "autodiff": ("AutodiffPtychographyOptions", False),
}


def _options(api, engine: str, s: dict):
    if engine not in _OPTIONS:
        raise ValueError(f"unknown pty-chi engine {engine!r}; known: {', '.join(_OPTIONS)}")
    cls, pie_alphas = _OPTIONS[engine]
    o = getattr(api, cls)()
    opt = getattr(api.Optimizers, str(s.get("optimizer", "sgd")).upper())
    o.object_options.optimizer = opt
    o.probe_options.optimizer = opt
    o.object_options.step_size = float(s["object_step"])
    o.probe_options.step_size = float(s["probe_step"])
    if pie_alphas:
        o.object_options.alpha = float(s["object_alpha"])
        o.probe_options.alpha = float(s["probe_alpha"])
    return o


def placement(positions_px, frame_shape) -> tuple[np.ndarray, np.ndarray]:
    """pty-chi ``(centres, position_origin_coords)`` for ptyflow window corners."""
    half = np.array([(frame_shape[0] - 1) / 2.0, (frame_shape[1] - 1) / 2.0])
    origin = half % 1.0  # half-pixel origin for even frames (see the module docstring)
    return np.asarray(positions_px, np.float64) + half - origin, origin


@contextlib.contextmanager
def angular_spectrum_only():
    """Keep pty-chi's angular-spectrum near-field propagator (see the module docstring)
    inside the block; pty-chi's own choice is restored on exit."""
    from ptychi.propagate import WavefieldPropagatorParameters as W

    orig = W.is_fresnel_transform_preferrable
    W.is_fresnel_transform_preferrable = lambda self: False
    try:
        yield
    finally:
        W.is_fresnel_transform_preferrable = orig


def run(job: dict, arrays: dict, snapshot) -> dict:
    """Reconstruct; ``snapshot(epoch, object, seconds)`` is called at the requested epochs."""
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask

    engine = job["engine"]
    s = {**DEFAULTS[engine], **job.get("settings", {})}
    frames = np.asarray(arrays["frames"], np.float32)
    n, ny, nx = frames.shape
    pos = np.asarray(arrays["positions_px"], np.float64)
    centres, origin = placement(pos, (ny, nx))
    fft_scale = np.sqrt(ny * nx)
    probe = np.asarray(arrays["probe"], np.complex64)
    if "far_field" not in job:
        raise ValueError("the job must say far_field (True: FFT to the detector; False: "
                         "near-field propagation), as bench.suite_common.run_engine does")
    nearfield = not job["far_field"]
    if nearfield:
        fft_scale = 1.0  # angular spectrum: unitary in both codes
    obj0 = arrays.get("object_init")
    shape = tuple(int(v) for v in job["object_shape"])
    obj0 = np.ones(shape, np.complex64) if obj0 is None else np.asarray(obj0, np.complex64)
    device = job.get("device", "cpu")

    o = _options(api, engine, s)
    o.data_options.data = frames
    o.data_options.fft_shift = not nearfield
    if arrays.get("valid_pixel_mask") is not None:  # centred as the frames; pty-chi shifts both
        o.data_options.valid_pixel_mask = np.asarray(arrays["valid_pixel_mask"], bool)
    if nearfield:
        o.data_options.free_space_propagation_distance_m = float(job["distance"])
        o.data_options.wavelength_m = float(job["wavelength"])
    o.object_options.initial_guess = torch.as_tensor(obj0[None])
    o.object_options.pixel_size_m = float(job.get("pixel_size", 1.0))
    o.object_options.optimizable = True
    o.object_options.determine_position_origin_coords_by = (
        api.ObjectPosOriginCoordsMethods.SPECIFIED
    )
    o.object_options.position_origin_coords = origin
    o.probe_options.initial_guess = torch.as_tensor((probe / fft_scale)[None, None])
    o.probe_options.optimizable = bool(job.get("learn_probe", True))
    o.probe_position_options.position_x_px = centres[:, 1]
    o.probe_position_options.position_y_px = centres[:, 0]
    o.probe_position_options.optimizable = bool(job.get("learn_positions", False))
    if job.get("learn_positions"):
        # as pty-chi's own LSQML position-correction test (tungsten): SGD on the gradient
        # correction, each update limited to 5 px (pty-chi 2.2's name for the limit)
        pp = o.probe_position_options
        pp.optimizer = api.Optimizers.SGD
        pp.correction_options.correction_type = api.PositionCorrectionTypes.GRADIENT
        pp.correction_options.update_magnitude_limit = float(s.get("position_limit_px", 5.0))
    r = o.reconstructor_options
    r.batch_size = int(min(int(s["batch_size"]), n))
    r.num_epochs = int(job["epochs"])
    r.default_device = api.Devices.GPU if str(device).startswith("cuda") else api.Devices.CPU
    r.random_seed = int(job.get("seed", 0))
    if engine == "lsqml" and "noise_model" in s:
        r.noise_model = getattr(api.NoiseModels, str(s["noise_model"]).upper())

    # pty-chi (re)chooses its near-field propagator while it builds and runs the task.
    with angular_spectrum_only() if nearfield else contextlib.nullcontext():
        t0 = time.perf_counter()
        task = PtychographyTask(o)
        setup_s = time.perf_counter() - t0
        epoch_times, losses = [], []
        want = set(int(e) for e in job.get("snapshot_epochs", []))
        for epoch in range(1, int(job["epochs"]) + 1):
            t = time.perf_counter()
            task.run(n_epochs=1)
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            epoch_times.append(time.perf_counter() - t)
            try:
                losses.append(float(task.reconstructor.loss_tracker.table.iloc[-1].loss))
            except Exception:  # noqa: BLE001 - the loss is informative only
                losses.append(float("nan"))
            if epoch in want:
                snapshot(epoch, task.get_data_to_cpu("object", as_numpy=True)[0], sum(epoch_times))
    obj = task.get_data_to_cpu("object", as_numpy=True)[0]
    pr = task.get_data_to_cpu("probe", as_numpy=True)
    pr = pr.reshape(-1, *pr.shape[-2:])[0] * fft_scale
    # window corners again (the inverse of placement)
    half = np.array([(ny - 1) / 2.0, (nx - 1) / 2.0])
    corners = np.asarray(task.get_data_to_cpu("probe_positions", as_numpy=True), np.float64)
    return {
        "object": obj.astype(np.complex64),
        "probe": pr.astype(np.complex64),
        "positions_px": corners - half + origin,
        "epoch_times": epoch_times,
        "loss_history": losses,
        "setup_s": setup_s,
        "settings": s,
    }
