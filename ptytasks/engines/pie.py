"""ePIE and rPIE: the ptychographical iterative engine, sequential or mini-batch.

One loop serves both update rules (Maiden & Rodenburg 2009; Maiden, Johnson & Li 2017,
Optica 4, 736). For a batch of frames with object patches ``O_i``, probe ``P`` (optionally
incoherent modes ``P_m``) and exit-wave corrections ``dpsi_i`` from the modulus projection,

- ePIE:  ``D_i = alpha conj(P) dpsi_i / max|P|^2``,
- rPIE:  ``D_i = conj(P) dpsi_i / ((1 - alpha) |P|^2 + alpha max|P|^2)``,
- object: ``O += S[D_i] / max(1, S[|P|^2 / max|P|^2])``,

where ``S`` carries each frame's update back to its (sub-pixel) place on the object canvas
and sums over the batch; the divisor averages the updates of frames that light the same
pixel. A batch of one frame (``batch_size=1``, the default) is exactly the textbook update.
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
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.engines.cpu_heap import keep_heap
from ptytasks.engines.multislice_pie import MultislicePIEState
from ptytasks.engines.options import PIEOptions
from ptytasks.engines.position_correction import PositionRefiner, grid_search
from ptytasks.engines.result import ReconstructionResult
from ptytasks.physics.models.base import ForwardModel
from ptytasks.physics.models.factory import model_for
from ptytasks.physics.modes import add_modes, orthogonalize_modes, power_fractions

Callback = Callable[[int, dict], object]


def model_from_data(data: PtychoData) -> ForwardModel:
    """The forward model of a scanning dataset (far field, near field, or coded: the
    specimen scanned over a coded sensor, with the surface from ``data.meta["surface"]``)."""
    if data.modality not in ("farfield", "nearfield", "coded"):
        raise ValueError(
            f"reconstruct_pie handles 'farfield', 'nearfield' and 'coded' data; got "
            f"{data.modality!r} (use reconstruct_fourier_pie for Fourier ptychography)"
        )
    return model_for(data)


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


def _local_windows(corners: torch.Tensor, window: tuple[int, int]):
    """Bounding box ``(y0, x0, h, w)`` of the windows and their flat indices inside it.

    Working on the batch's bounding box (not the whole canvas) keeps the sequential
    (batch of one) loop at the cost of the window, independent of the object size.
    """
    wy, wx = window
    y0, x0 = int(corners[:, 0].min()), int(corners[:, 1].min())
    h = int(corners[:, 0].max()) - y0 + wy
    w = int(corners[:, 1].max()) - x0 + wx
    ry = torch.arange(wy, device=corners.device)
    rx = torch.arange(wx, device=corners.device)
    rows = (corners[:, 0] - y0)[:, None, None] + ry[None, :, None]
    cols = (corners[:, 1] - x0)[:, None, None] + rx[None, None, :]
    return (y0, x0, h, w), rows * w + cols


def initial_probe(data: PtychoData, model: ForwardModel, device, cdtype) -> torch.Tensor:
    """A probe guess when none is given (:mod:`ptytasks.probe_estimate`).

    Far field: the mean pattern's aperture with the defocus the frames choose
    (:func:`~ptytasks.probe_estimate.blind_farfield_probe`). Near field: the probe a
    phase-only-object ePIE finds on a trial set
    (:func:`~ptytasks.probe_estimate.blind_nearfield_probe`; a warning when it did not leave
    the flat-phase start's trap). Otherwise (coded) the back-propagated root-mean frame.
    """
    from ptytasks import probe_estimate as pe

    if model.modality == "farfield":
        probe, _ = pe.blind_farfield_probe(data)
        return torch.as_tensor(probe, device=device).to(cdtype)
    if model.modality == "nearfield":
        probe, rep = pe.blind_nearfield_probe(data)
        if not rep["escaped"]:
            import warnings

            warnings.warn(f"blind near-field probe: the trial loss fell only from "
                          f"{rep['loss_first']:.3g} to {rep['loss_final']:.3g} in "
                          f"{rep['epochs']} epochs; supply a probe if the result is poor",
                          stacklevel=2)  # fmt: skip
        return torch.as_tensor(probe, device=device).to(cdtype)
    mean_amp = torch.as_tensor(np.sqrt(np.clip(data.frames, 0, None).mean(0)), device=device)
    idx = torch.zeros(1, dtype=torch.long, device=device)
    return model.from_detector(mean_amp.to(cdtype)[None], idx)[0]


class PIEState:
    """Object, probe modes, positions and the per-batch PIE update.

    Shared by the scanning engine and the Fourier engine (where the "object" is the
    spectrum, the "probe" the pupil and the positions the spectrum-window corners).

    Parameters
    ----------
    obj : complex ``(ny, nx)``; probe : complex ``(M, wy, wx)``; positions : real ``(n, 2)``
        Updated in place.
    model : object with ``to_detector(psi, idx)`` / ``from_detector(wave, idx)``
    amp : real ``(n, wy, wx)``
        Measured amplitudes ``sqrt(I)``.
    sqrt_f : real ``(n,)``
        Square roots of the per-frame intensity factors.
    alpha, beta : float; variant : {"epie", "rpie"}; subpixel : bool; eps : float
        As in :class:`~ptytasks.engines.options.PIEOptions`.
    probe_support : real ``(wy, wx)`` or None
        Multiplied into the probe after each probe update (a pupil's NA disc).
    detector_mask : bool ``(wy, wx)`` or None
        Detector pixels whose measurement is enforced; elsewhere the modulus projection
        keeps the model's own amplitude (and the pixel adds nothing to the error).
    """

    def __init__(self, obj, probe, positions, model, amp, sqrt_f, *, alpha: float,
                 beta: float, variant: str, subpixel: bool = True, eps: float = 1e-8,
                 probe_support: torch.Tensor | None = None,
                 detector_mask: torch.Tensor | None = None):
        self.obj, self.probe, self.pos, self.model = obj, probe, positions, model
        self.amp, self.sqrt_f = amp, sqrt_f
        self.alpha, self.beta, self.rpie = alpha, beta, variant == "rpie"
        self.subpixel, self.eps, self.support = subpixel, eps, probe_support
        self.mask = detector_mask
        self.window = tuple(probe.shape[-2:])
        # 1-D frequency grids for the separable sub-pixel shift ramps (cached: rebuilding
        # 2-D grids per frame dominated the sequential loop).
        rdt = probe.real.dtype
        self._fy = torch.fft.fftfreq(self.window[0], dtype=rdt, device=probe.device)
        self._fx = torch.fft.fftfreq(self.window[1], dtype=rdt, device=probe.device)

    def _shift(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``x(r - shift)`` for ``x`` ``(b, wy, wx)``, ``shift`` ``(b, 2)``: a Fourier ramp.

        Same convention as :func:`ptytasks.physics.shifts.fourier_shift`, built as the
        outer product of two 1-D ramps.
        """
        s = shift.to(self._fy.dtype)
        ry = torch.polar(torch.ones_like(self._fy), -2 * torch.pi * s[:, :1] * self._fy)
        rx = torch.polar(torch.ones_like(self._fx), -2 * torch.pi * s[:, 1:] * self._fx)
        ramp = ry[:, :, None] * rx[:, None, :]
        return torch.fft.ifft2(torch.fft.fft2(x) * ramp)

    def step(self, idx: torch.Tensor, update_probe: bool, refiner: PositionRefiner | None = None):
        """One PIE update from frames ``idx``; returns the batch's amplitude error sum."""
        eps = self.eps
        pos = self.pos[idx]
        if self.subpixel:
            corners = torch.floor(pos).long()
            frac = pos - corners.to(pos.dtype)
            has_frac = bool(frac.abs().max() > 1e-6)
        else:
            corners, frac, has_frac = torch.round(pos).long(), None, False
        (y0, x0, h, w), lidx = _local_windows(corners, self.window)
        region = self.obj[y0:y0 + h, x0:x0 + w]
        crop = region.reshape(-1)[lidx]
        # patch(r) = O(c + f + r): the integer crop shifted by -f (as extract_patches does).
        patch = self._shift(crop, -frac) if has_frac else crop
        psi = patch[:, None] * self.probe[None]  # (b, M, wy, wx)
        single = psi.shape[1] == 1
        wave = self.model.to_detector(psi[:, 0] if single else psi, idx)
        wave = wave[:, None] if single else wave
        mod = torch.sqrt((wave.real**2 + wave.imag**2).sum(1))
        sf = self.sqrt_f[idx, None, None]
        amp = self.amp[idx]
        # Modulus projection: keep the phase, impose the measured amplitude (all modes
        # scaled alike, the mixed-state form); unmeasured pixels keep the model's.
        ratio = amp / sf / (mod + eps)
        if self.mask is None:
            err = float(((mod * sf - amp) ** 2).sum())
        else:
            err = float((((mod * sf - amp) ** 2) * self.mask).sum())
            ratio = torch.where(self.mask, ratio, torch.ones_like(ratio))
        wave = wave * ratio[:, None]
        new = self.model.from_detector(wave[:, 0] if single else wave, idx)
        dpsi = (new[:, None] if single else new) - psi

        # Both updates from the same (pre-update) object and probe. Each frame's object
        # update is the textbook one, divided in the window's own frame and carried back by
        # the inverse (= adjoint) sub-pixel shift: dividing after the shift would put the
        # shifted numerator's ringing (a sharp pupil's edge in Fourier ptychography, a
        # probe's wrap-around at the window edge) over near-zero illumination, where rPIE's
        # small alpha amplifies it until the iteration diverges.
        num_o = (self.probe.conj()[None] * dpsi).sum(1)
        p_int = (self.probe.real**2 + self.probe.imag**2).sum(0)
        pmax = p_int.max()
        if self.rpie:
            delta_o = num_o / ((1 - self.alpha) * p_int + self.alpha * pmax + eps)
        else:
            delta_o = num_o * (self.alpha / (pmax + eps))
        delta_o = self._shift(delta_o, frac) if has_frac else delta_o
        if len(idx) > 1:
            # Mini-batch: sum the frames' updates on the canvas and divide by the batch's
            # relative illumination where it exceeds one, so frames lighting the same pixel
            # average their updates instead of adding them; pixels lit by one frame get
            # exactly the sequential update. The divisor is smooth and >= 1 (no blow-up).
            flat = lidx.reshape(-1)
            canvas = torch.zeros(h * w, dtype=delta_o.dtype, device=delta_o.device)
            canvas.index_add_(0, flat, delta_o.reshape(-1))
            rel = (p_int / (pmax + eps)).expand(len(idx), -1, -1)
            count = torch.zeros(h * w, dtype=rel.dtype, device=rel.device)
            count.index_add_(0, flat, rel.reshape(-1))
            delta_o = canvas / count.clamp_min(1.0)

        if update_probe:
            num_p = (patch.conj()[:, None] * dpsi).sum(0)
            o_int = (patch.real**2 + patch.imag**2).sum(0)
            omax = o_int.max()
            if self.rpie:
                delta_p = num_p / ((1 - self.beta) * o_int + self.beta * omax + eps)
            else:
                delta_p = num_p * (self.beta / (omax + eps))
        if refiner is not None:
            refiner.update(idx, patch, self.probe, dpsi)

        region += delta_o.reshape(h, w)
        if update_probe:
            self.probe += delta_p
            if self.support is not None:
                self.probe *= self.support
        return err


def reconstruct_pie(
    data: PtychoData,
    options: PIEOptions | None = None,
    *,
    object_init=None,
    probe_init=None,
    model: ForwardModel | None = None,
    callback: Callback | None = None,
    detector_mask=None,
) -> ReconstructionResult:
    """Reconstruct object and probe from far-field, near-field or coded ptychography data.

    Parameters
    ----------
    data : PtychoData
        Frames (centred for far field), ``positions_px``, ``object_shape``; ``data.probe``
        is the initial probe unless ``probe_init`` is given.
    options : PIEOptions, optional
        Update rule, steps, epochs, batch size, position correction, seed, device.
    object_init : array ``(ny, nx)``, optional
        Initial object; default all ones (free space).
    probe_init : array ``(ny, nx)`` or ``(M, ny, nx)``, optional
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
        Detector pixels to enforce (True); the others are free (e.g. the guard band of a
        coded tile, :attr:`ptytasks.tiling.Tile.guard`). Default: all.

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
    model = (model or model_from_data(data)).to(device)
    window = data.frame_shape

    amp = torch.sqrt(torch.as_tensor(np.clip(data.frames, 0, None), dtype=rdtype, device=device))
    mask = None
    if detector_mask is not None:
        mask = torch.as_tensor(np.asarray(detector_mask, bool), device=device)
        if tuple(mask.shape) != window:
            raise ValueError(f"detector_mask shape {tuple(mask.shape)} != frame shape {window}")
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

    n_slices = int(opts.n_slices)
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1; got {opts.n_slices}")
    if n_slices > 1:
        if getattr(model, "slice_distance", None) is None:
            raise ValueError(f"{n_slices} slices need their spacing: params['slice_distance'] "
                             "(metres) in the data")  # fmt: skip
        if opts.position_correction is not None:
            raise ValueError("position correction is not available with multislice objects")
    if object_init is None:
        obj = torch.ones(data.object_shape, dtype=cdtype, device=device)
    else:
        obj = torch.as_tensor(np.asarray(object_init), device=device).to(cdtype).clone()
    if n_slices > 1 and obj.dim() == 2:
        # A projection start: every slice gets its S-th root (the product is unchanged).
        obj = (obj ** (1.0 / n_slices))[None].repeat(n_slices, 1, 1)
    if probe_init is not None:
        probe = torch.as_tensor(np.asarray(probe_init), device=device).to(cdtype).clone()
    elif data.probe is not None:
        probe = torch.as_tensor(np.asarray(data.probe), device=device).to(cdtype).clone()
    else:
        probe = initial_probe(data, model, device, cdtype)
    probe = probe[None] if probe.dim() == 2 else probe
    if int(opts.probe_modes) < 1:
        raise ValueError(f"probe_modes must be >= 1; got {opts.probe_modes}")
    probe = add_modes(probe, int(opts.probe_modes))
    if tuple(probe.shape[-2:]) != window:
        raise ValueError(f"probe shape {tuple(probe.shape[-2:])} != frame shape {window}")

    factors = model.intensity_factors.detach().to(device=device, dtype=rdtype)
    if opts.rescale_probe:
        # Far/near field are unitary: for |O| ~ 1 a frame's counts equal f * sum|P|^2. The
        # coded surface is not (it absorbs): measure the power the detector sees instead.
        if model.modality == "coded":
            idx0 = torch.zeros(1, dtype=torch.long, device=device)
            det = model.to_detector(probe, idx0)
            det_int = det.real**2 + det.imag**2
            power = float((det_int if mask is None else det_int * mask).sum())
        else:
            power = float((probe.real**2 + probe.imag**2).sum())
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
                grid_search(state.obj, state.probe, positions, model, amp, state.sqrt_f,
                            radius=opts.position_correction.search_radius,
                            lower=lower, upper=upper)
            if active is not None or (refiner is not None and refiner.search_due(epoch)):
                refiner.end_epoch(lower, upper)
            losses.append(err / max(total_counts, 1e-30))
            epoch_times.append(time.perf_counter() - t0)
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
