"""ePIE and rPIE: the ptychographical iterative engine, sequential or mini-batch.

One loop serves both update rules (Maiden & Rodenburg 2009; Maiden, Johnson & Li 2017,
Optica 4, 736). For a batch of frames with object patches ``O_i``, probe ``P`` (optionally
incoherent modes ``P_m``) and exit-wave corrections ``dpsi_i`` from the modulus projection,

- ePIE:  ``D_i = alpha conj(P) dpsi_i / max|P|^2``,
- rPIE:  ``D_i = conj(P) dpsi_i / ((1 - alpha) |P|^2 + alpha max|P|^2)``,
- object: ``O += S[D_i] / max(1, S[g])``, with each frame's gain ``g`` (its step as a
  fraction of a full projection, ``alpha`` left out for ePIE): ePIE ``|P|^2 / max|P|^2``,
  rPIE ``|P|^2 / ((1 - alpha) |P|^2 + alpha max|P|^2)``,

where ``S`` carries each frame's update back to its (sub-pixel) place on the object canvas
and sums over the batch; the divisor averages the updates of frames that light the same
pixel, so no pixel gets more than one full projection per step (rPIE's gain nears 1 in the
probe's dim tails; counting ePIE's gain there let a batch of every frame diverge). A batch
of one frame (``batch_size=1``, the default) is exactly the textbook update.
The probe update is the batch sum ``sum_i conj(O_i) dpsi_i`` over the same denominators
built from ``W = sum_i |O_i|^2`` (step ``beta``): ePIE ``beta / max W``, rPIE
``1 / ((1 - beta) W + beta max W)``.
Frames are visited in a seeded random order per epoch; optional scan-position refinement
is :mod:`ptytasks.engines.position_correction`.

The engine works over any :class:`~ptytasks.physics.models.base.ForwardModel` whose
``from_detector`` inverts ``to_detector`` (far field, near field: a unitary pair; coded
ptychography: the inverse through the known coded surface): it only needs those two
maps; object patches are taken with :func:`~ptytasks.physics.shifts.extract_patches`
conventions (window corners, sub-pixel Fourier shifts).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.engines.cpu_heap import keep_heap
from ptytasks.engines.multislice_pie import MultislicePIEState
from ptytasks.engines.options import PIEOptions
from ptytasks.engines.pie_state import PIEState, as_detector_mask, detector_mask_of, diverged
from ptytasks.engines.position_correction import PositionRefiner, grid_search
from ptytasks.engines.result import ReconstructionResult
from ptytasks.modalities import modality_of, model_for
from ptytasks.physics.models.base import ForwardModel
from ptytasks.physics.modes import add_modes, orthogonalize_modes, power_fractions
from ptytasks.probe_estimate import mean_pattern

Callback = Callable[[int, dict], object]


@contextlib.contextmanager
def cpu_threads(device: torch.device, requested: int | None, batch_pixels: int) -> Iterator[None]:
    """Run with ``requested`` torch CPU threads (None: 1 for small batches), then restore.

    ``torch.set_num_threads`` is process-wide: callers running several reconstructions in
    threads of one process should pass the same value to all of them.
    """
    n = requested if requested is not None else (1 if batch_pixels <= 2**18 else None)
    if device.type != "cpu" or n is None or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def initial_probe(data: PtychoData, model: ForwardModel, device, cdtype) -> torch.Tensor:
    """A probe guess when none is given (:mod:`ptytasks.probe_estimate`).

    Far field: the mean pattern's aperture with the defocus the frames choose
    (:func:`~ptytasks.engines.blind_probe.blind_farfield_probe`; a warning when the pick is
    the smallest footprint, where the score did not turn, unless that footprint is already
    in focus). Near field: the probe a
    phase-only-object ePIE finds on a trial set
    (:func:`~ptytasks.engines.blind_probe.blind_nearfield_probe`; a warning when it did not leave
    the flat-phase start's trap). Otherwise (coded) the back-propagated root-mean frame.
    """
    from ptytasks.engines import blind_probe as bp

    kind = modality_of(data).blind_probe  # the estimator that suits the illumination
    if kind == "far_field_pie":
        probe, rep = bp.blind_farfield_probe(data, reconstruct_pie)
        if rep["suspect"]:  # not where the smallest candidate is already in focus
            warnings.warn(f"blind far-field probe: the footprint score kept falling down to "
                          f"the smallest candidate ({rep['diameter_px']:.1f} px at "
                          f"{rep['mean_counts']:.3g} counts per pixel), so the start is "
                          "probably wrong; supply a probe (in the file, or calibration.probe "
                          "'physical' with the beam parameters)", stacklevel=2)  # fmt: skip
        return torch.as_tensor(probe, device=device).to(cdtype)
    if kind == "near_field_phase":
        probe, rep = bp.blind_nearfield_probe(data)
        if not rep["escaped"]:
            warnings.warn(f"blind near-field probe: the trial loss fell only from "
                          f"{rep['loss_first']:.3g} to {rep['loss_final']:.3g} in "
                          f"{rep['epochs']} epochs; supply a probe if the result is poor",
                          stacklevel=2)  # fmt: skip
        return torch.as_tensor(probe, device=device).to(cdtype)
    # masked pixels filled from their neighbours, as the far- and near-field starts do
    mean = mean_pattern(data.frames, use=detector_mask_of(data.meta))
    mean_amp = torch.as_tensor(np.sqrt(mean), device=device)
    idx = torch.zeros(1, dtype=torch.long, device=device)
    return model.from_detector(mean_amp.to(cdtype)[None], idx)[0]


def reconstruct_pie(
    data: PtychoData,
    options: PIEOptions | None = None,
    *,
    object_prior=None,
    probe_prior=None,
    model: ForwardModel | None = None,
    callback: Callback | None = None,
    detector_mask=None,
) -> ReconstructionResult:
    """Reconstruct object and probe from far-field, near-field or coded ptychography data.

    Parameters
    ----------
    data : PtychoData
        Frames (centred for far field), ``positions_px``, ``object_shape``; ``data.probe``
        is the initial probe unless ``probe_prior`` is given.
    options : PIEOptions, optional
        Update rule, steps, epochs, batch size, position correction, seed, device.
    object_prior : array ``(ny, nx)``, optional
        Initial object; default all ones (free space).
    probe_prior : array ``(ny, nx)`` or ``(M, ny, nx)``, optional
        Initial probe (modes); default ``data.probe``, else the blind estimate
        (:func:`initial_probe`); extended to ``options.probe_modes`` modes.
    model : ForwardModel, optional
        Forward model to propagate with (default built from ``data``); its positions and
        intensity factors are used, and refined positions are written back to it.
    callback : callable, optional
        ``callback(epoch, info)`` after every epoch; ``info`` has ``loss``, ``time``
        (seconds this epoch), ``elapsed``, and live ``object``/``probe``/``positions``
        tensors (do not modify them).
    detector_mask : bool array ``(ny, nx)``, optional
        Detector pixels to enforce (True); the others are free. Default: the data's own
        (:func:`~ptytasks.engines.pie_state.detector_mask_of`: the file's bad pixels, the
        artefacts found at ingest, a coded tile's guard band), as RNF and PINE use it;
        all pixels where it has none.

    Returns
    -------
    ReconstructionResult
        ``object``, ``probe`` (2-D for one mode), ``positions_px``, ``loss_history`` (the
        normalised amplitude error ``sum(| |Psi| - sqrt(I) |^2) / sum(I)`` accumulated
        during each epoch), ``timings``, ``params``.
    """
    opts = options or PIEOptions()
    t_start = time.perf_counter()
    device = torch.device(opts.device)
    keep_heap(device)  # CPU: reuse freed buffers across frames (ptytasks/engines/cpu_heap.py)
    cdtype = torch.complex128 if opts.dtype == "complex128" else torch.complex64
    rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
    if not modality_of(data).scanning:
        raise ValueError(f"reconstruct_pie handles scanning data (far field, near field, "
                         f"coded); got {data.modality!r} (use reconstruct_fourier_pie for "
                         "Fourier ptychography)")  # fmt: skip
    model = (model or model_for(data)).to(device)
    window = data.frame_shape

    amp = torch.sqrt(torch.as_tensor(np.clip(data.frames, 0, None), dtype=rdtype, device=device))
    mask = as_detector_mask(detector_mask_of(data.meta) if detector_mask is None
                            else detector_mask, window, device)  # fmt: skip
    total_counts = float((amp**2).sum() if mask is None else (amp**2 * mask).sum())
    positions = model.positions.detach().clone().to(device=device, dtype=torch.float64)
    upper = torch.tensor([data.object_shape[0] - window[0], data.object_shape[1] - window[1]],
                         dtype=positions.dtype, device=device)
    lower = torch.zeros(2, dtype=positions.dtype, device=device)
    # Sub-pixel shifts need the next pixel too; keep every corner within the canvas.
    if bool((positions < lower).any()) or bool((positions > upper).any()):
        raise ValueError(
            f"scan positions put the {window} probe window outside the {data.object_shape} "
            f"object: corners span {positions.min(0).values.tolist()} .. "
            f"{positions.max(0).values.tolist()} (allowed 0 .. {upper.tolist()})"
        )

    if object_prior is None:
        obj = torch.ones(data.object_shape, dtype=cdtype, device=device)
    else:
        obj = torch.as_tensor(np.asarray(object_prior), device=device).to(cdtype).clone()
    obj = model.object_slices(obj, opts.n_slices)
    n_slices = int(opts.n_slices)
    if probe_prior is not None:
        probe = torch.as_tensor(np.asarray(probe_prior), device=device).to(cdtype).clone()
    elif data.probe is not None:
        probe = torch.as_tensor(np.asarray(data.probe), device=device).to(cdtype).clone()
    else:
        # the estimators read the data's mask: the one given here is theirs too
        given = data if detector_mask is None else replace(data, meta={
            **{k: v for k, v in data.meta.items() if k != "tile_mask"},
            "mask": mask.cpu().numpy()})
        probe = initial_probe(given, model, device, cdtype)
    probe = probe[None] if probe.dim() == 2 else probe
    probe = add_modes(probe, int(opts.probe_modes))
    if tuple(probe.shape[-2:]) != window:
        raise ValueError(f"probe shape {tuple(probe.shape[-2:])} != frame shape {window}")

    factors = model.intensity_factors.detach().to(device=device, dtype=rdtype)
    if opts.rescale_probe:
        # For |O| ~ 1 a frame's counts equal f times the probe's power the detector sees
        # on the pixels counted (total_counts leaves the masked ones out; the coded surface
        # absorbs some). Far/near field are unitary: without a mask that is sum|P|^2.
        if mask is None and not modality_of(data).has_surface:
            power = float((probe.real**2 + probe.imag**2).sum())
        else:
            idx0 = torch.zeros(1, dtype=torch.long, device=device)
            det = model.to_detector(probe, idx0)
            det_int = det.real**2 + det.imag**2
            power = float((det_int if mask is None else det_int * mask).sum())
        target = total_counts / float(factors.sum())
        probe *= (target / max(power, 1e-30)) ** 0.5

    alpha, beta = opts.steps()
    state_cls = MultislicePIEState if n_slices > 1 else PIEState
    state = state_cls(obj, probe, positions, model, amp, factors.sqrt(), alpha=alpha,
                      beta=beta, variant=opts.variant, subpixel=opts.subpixel, eps=opts.eps,
                      detector_mask=mask)  # fmt: skip
    refiner = PositionRefiner(positions, opts.position_correction) \
        if opts.position_correction is not None else None
    gen = torch.Generator().manual_seed(int(opts.seed))
    n = data.n_frames
    losses: list[float] = []
    epoch_times: list[float] = []
    batch_pixels = max(1, int(opts.batch_size)) * window[0] * window[1]
    with torch.no_grad(), cpu_threads(device, opts.cpu_threads, batch_pixels):
        for epoch in range(opts.iterations):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=gen) if opts.shuffle else torch.arange(n)
            order = order.to(device)
            upd_p = opts.update_probe and epoch >= opts.probe_update_start
            active = refiner if (refiner is not None and refiner.active(epoch)) else None
            err = 0.0
            for idx in order.split(max(1, int(opts.batch_size))):
                err += state.step(idx, upd_p, active)
            if upd_p and state.probe.shape[0] > 1:
                # Keep the modes the mixed state's orthogonal eigenmodes (intensity unchanged).
                state.probe.copy_(orthogonalize_modes(state.probe))
            if refiner is not None and refiner.search_due(epoch):
                # this epoch's sub-pixel steps are bounded only at its end: a frame at the
                # canvas edge may sit just outside it, where no candidate window can be cut
                positions.copy_(torch.minimum(torch.maximum(positions, lower), upper))
                grid_search(state.obj, state.probe, positions, model, amp, state.sqrt_f,
                            radius=opts.position_correction.search_radius,
                            lower=lower, upper=upper, mask=mask, subpixel=opts.subpixel)
            if active is not None or (refiner is not None and refiner.search_due(epoch)):
                refiner.end_epoch(lower, upper)
            losses.append(err / max(total_counts, 1e-30))
            epoch_times.append(time.perf_counter() - t0)
            if diverged(err, epoch, opts.variant, alpha=alpha, beta=beta,
                        batch_size=opts.batch_size):  # fmt: skip
                break
            if callback is not None:
                callback(epoch, {
                    "epoch": epoch, "loss": losses[-1], "time": epoch_times[-1],
                    "elapsed": time.perf_counter() - t_start, "object": state.obj,
                    "probe": state.probe, "positions": state.pos,
                })
    model.positions.data = positions.to(model.positions.dtype)
    probe_out = state.probe[0] if state.probe.shape[0] == 1 else state.probe
    params = {k: float(v) for k, v in model.physical_parameters().items() if v.numel() == 1}
    extras = {}
    if state.probe.shape[0] > 1:  # the mixed state's orthogonal modes, strongest first
        state.probe.copy_(orthogonalize_modes(state.probe))
        extras["mode_power_fractions"] = power_fractions(state.probe).cpu().numpy()
    if refiner is not None:
        extras["position_rms_change"] = list(refiner.history)
        extras["initial_positions_px"] = refiner.initial.cpu().numpy()
    return ReconstructionResult(
        object=state.obj.cpu().numpy(),
        probe=probe_out.cpu().numpy(),
        positions_px=positions.cpu().numpy(),
        params=params,
        loss_history=losses,
        timings={"total": time.perf_counter() - t_start,
                 "per_epoch": float(np.mean(epoch_times)) if epoch_times else 0.0},
        engine=opts.variant,
        options=opts.to_dict(),
        extras=extras,
    )
