"""Residual neural-field ptychography (RNF): the differentiable-physics trainer.

Object, probe (and coded surface / Fourier pupil) are complex neural fields on top of
physical priors, ``O = O_prior + F_O(r)`` (paper Eqs. 2-3); the forward model of the
modality is the differentiable layer, and AdamW trains the fields jointly with any of the
model's physical parameters (scan positions or LED wavevectors, distance, wavelength,
Zernike coefficients, per-frame intensity factors, the phasor frequency). Loss (Eq. 6)::

    L = mean_batch L_data(J_i, I_i) + mu * mean |Haar(O - O_prior)|

Frames are scaled to unit mean intensity per pixel inside the engine (so ``mu`` and the
Huber threshold mean the same at any dose); the probe (Fourier: the object) is scaled back
in the result. Only the object pixels under a batch's windows are needed, so the object
field is evaluated on the windows' bounding box when that is smaller than the object
(``eval_region``). Runs are seeded and deterministic on CPU, checkpoint every epoch, and
resume exactly -- only from a checkpoint made from the same inputs and options
(:mod:`ptytasks.engines.checkpoint`).

What the physics lets one learn (see ``docs`` of :class:`RNFOptions` and the tests):
near-field propagation with the angular spectrum ``exp(i k z sqrt(1 - (lambda f)^2))``
depends on ``lambda z`` only to first (paraxial) order; wavelength and distance separate
through the ``lambda^3 z f^4`` term, so they are individually identifiable only at high
numerical aperture (fine pixels compared with the wavelength). In the Fresnel regime only
the product ``lambda z`` is determined.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.engines.aperture_probe import aperture_prior
from ptytasks.engines.batching import batches
from ptytasks.engines.checkpoint import (
    inputs_digest,
    load_checkpoint,
    restore_state,
    save_state,
)
from ptytasks.engines.cpu_heap import keep_heap
from ptytasks.engines.data_term import data_scale, resolve_data_term, resolve_probe_warmup
from ptytasks.engines.losses import data_loss as make_data_loss
from ptytasks.engines.losses import noise_threshold, wavelet_sparsity
from ptytasks.engines.pie_state import as_detector_mask, detector_mask_of
from ptytasks.engines.result import ReconstructionResult
from ptytasks.engines.rnf_options import RNFOptions
from ptytasks.engines.rnf_parts import (
    Field,
    PixelField,
    affine_part,
    build_optimiser,
    current_object,
    default_probe,
    physical_params,
    rnf_result,
    slices_of,
)
from ptytasks.engines.rnf_step import StepGraph, train_step
from ptytasks.engines.rnf_windows import WindowGeometry
from ptytasks.modalities import modality_of, model_for
from ptytasks.physics.models.base import ForwardModel
from ptytasks.physics.modes import add_modes
from ptytasks.physics.shifts import check_windows, extract_patches

__all__ = ["RNFOptions", "default_probe", "reconstruct_rnf"]

Callback = Callable[[int, dict], object]


def _complex(x, cdt, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), device=device).to(cdt)


class _Setup(WindowGeometry):
    """Priors, fields, model parameters and the optimiser of one run."""

    def __init__(self, data, opts, model, priors, device, rdt, cdt):
        self.data, self.opts, self.model = data, opts, model
        self.device, self.rdt, self.cdt = device, rdt, cdt
        self.fourier = modality_of(data).has_pupil
        modality_of(data).refuse_scanning_only(probe_modes=opts.probe_modes,
                                               n_slices=opts.n_slices)  # fmt: skip
        frames = torch.as_tensor(np.clip(data.frames, 0, None), dtype=rdt, device=device)
        obj_p, probe_p, surf_p, pupil_p = priors
        self.window = data.frame_shape
        # Detector pixels the data term enforces (the dataset's usable pixels; a tile's
        # guard band is left free: ptytasks.tiling.Tile.guard); None: all.
        self.detector_mask = as_detector_mask(detector_mask_of(data.meta), data.frame_shape,
                                              device)  # fmt: skip
        # --- data scale: unit mean intensity per used pixel (FP: of the most central LED).
        self.scale, self.centre_led = data_scale(frames, model if self.fourier else None,
                                                 self.detector_mask)  # fmt: skip
        # The scanning probe's start: the given prior, the file's probe, else the blind
        # estimate -- made once here and handed to the data-term prefit too (which would
        # otherwise estimate the same probe again inside its rPIE).
        derived = None
        if not self.fourier:
            if probe_p is None and data.probe is not None:
                probe_p = data.probe
            if probe_p is None:
                derived = self._default_probe()
        fit_probe = probe_p
        if derived is not None and modality_of(data).localized_probe:
            fit_probe = derived.detach().cpu().numpy()  # PIE's own start for this data
        # loss / mu "auto": chosen from these frames (ptytasks.engines.data_term)
        self.data_term = resolve_data_term(data, opts, model, (obj_p, fit_probe, surf_p, pupil_p),
                                           frames, self.scale)  # fmt: skip
        resolve_probe_warmup(opts, self.data_term)  # "auto": frozen longer where starved
        self.data_delta = noise_threshold(opts.loss, opts.huber_delta, frames, self.scale,
                                          self.detector_mask)  # fmt: skip
        self.frames = frames / self.scale
        amp = 1.0 / math.sqrt(self.scale)
        # --- priors
        derived_probe = False
        if self.fourier:
            probe = None if probe_p is None else _complex(probe_p, cdt, device) * amp
            if obj_p is None:
                obj = self._fourier_object_prior()
            else:
                obj = _complex(obj_p, cdt, device) * amp
        else:
            if derived is not None:
                probe = derived
                derived_probe = True
            else:
                probe = _complex(probe_p, cdt, device) * amp
            if int(opts.probe_modes) != 1:  # one mode stays a 2-D probe
                added = int(opts.probe_modes) - (probe.shape[0] if probe.dim() == 3 else 1)
                share = min(opts.mode_start_fraction, 0.9 / max(added, 1))
                probe = add_modes(probe, int(opts.probe_modes), fraction=share)
            obj = (torch.ones(data.object_shape, dtype=cdt, device=device) if obj_p is None
                   else _complex(obj_p, cdt, device))
            obj = model.object_slices(obj, opts.n_slices)
        fields = {}
        if modality_of(data).has_surface:
            s = model.surface.detach() if surf_p is None else _complex(surf_p, cdt, device)
            fields["surface"] = s.to(device=device, dtype=cdt)
        if self.fourier:  # a prior is a whole pupil (the model's defocus in it, too): kept
            # as its ratio to the model's start pupil, so the start is the prior itself and
            # learned Zernike terms or distance move it from there
            self.pupil_prior = None
            if pupil_p is not None:
                p0 = model.pupil_function().detach().to(cdt)
                a2 = p0.real**2 + p0.imag**2
                ratio = p0.conj() / torch.where(a2 > 0, a2, torch.ones_like(a2))
                self.pupil_prior = _complex(pupil_p, cdt, device) * ratio
        if opts.rescale_prior and not self.fourier:
            # Match the predicted to the measured mean counts with |object| as given.
            c = self._power_ratio(obj, probe, fields)
            if derived_probe or obj_p is not None:
                probe = probe * math.sqrt(c)
            else:
                obj = obj * c ** (0.5 / slices_of(obj))
        elif opts.rescale_prior and obj_p is not None:
            obj = obj * self._power_ratio(obj, probe, fields) ** (0.5 / slices_of(obj))
        self.probe_fixed = probe
        self.surface_fixed = fields.get("surface")
        # --- fields
        seed = int(opts.seed)
        min_steps = modality_of(data).min_steps_per_epoch
        self.batch = opts.batch_for(len(frames), min_steps)  # frames per step, as run
        self.kernels = opts.field_kernels(len(frames), math.prod(data.object_shape),
                                          min_steps)
        mk = lambda shape, prior, s, mask=None, residual=None: Field(
            shape, prior, opts, seed=seed + 101 * s, mask=mask, dtype=rdt,
            residual=residual, kernels=self.kernels).to(device)
        self.obj_field = Field(data.object_shape, obj, opts, seed=seed, dtype=rdt,
                               anneal=opts.anneal_epochs > 0, kernels=self.kernels).to(device)
        self.probe_field = None
        if opts.learn_probe and probe is not None:
            if probe.dim() == 3 and probe.shape[0] > 1 and opts.mode_field == "pixels":
                self.probe_field = PixelField(probe, dtype=rdt).to(device)
            else:
                self.probe_field = mk(tuple(probe.shape[-2:]), probe, 1)
        # Mixed state: one log-amplitude per mode. The modes' power balance is a global
        # quantity a local field moves only slowly (extra modes stayed near their 5 %
        # start over 100 epochs); a scalar gain per mode lets it move at once.
        self.mode_gains = None
        if self.probe_field is not None and probe.dim() == 3 and probe.shape[0] > 1:
            self.mode_gains = torch.zeros(probe.shape[0], dtype=rdt, device=device,
                                          requires_grad=True)
        if self.probe_field is None and opts.probe_aperture is True:
            raise ValueError("probe_aperture needs a learned probe (learn_probe true and a "
                             "scanning modality's probe)")
        self.aperture = None if self.probe_field is None else aperture_prior(
            opts.probe_aperture, data, self.data_term, probe, device)
        self.surface_field = None
        if opts.learn_surface and self.surface_fixed is not None:
            self.surface_field = mk(tuple(self.surface_fixed.shape), self.surface_fixed, 2)
        self.pupil_field = None
        if self.fourier and opts.learn_pupil:
            base = self._pupil_base().detach()
            # always a correction added to the Zernike pupil (zero prior)
            self.pupil_field = mk(tuple(base.shape), torch.zeros_like(base), 3,
                                  mask=model.aperture.to(rdt), residual=True)
        build_optimiser(self)
        # Frozen scan positions: each step's box is found on the host from these integer
        # corners (checked here, once), with no device read per step.
        self.corners_host = None
        if not self.fourier and "positions" not in self.learned and self.affine is None:
            corners = torch.floor(model.positions.detach()).long().cpu()
            check_windows(corners, self.window, data.object_shape)
            self.corners_host = corners
        # Fourier: frozen LED wavevectors put the pupil windows in the spectrum once, so a
        # step reads nothing from the device (a CUDA graph can capture it)
        self.spectrum_checked = self.fourier and "wavevectors" not in self.learned
        if self.spectrum_checked:
            check_windows(torch.floor(model.spectrum_positions.detach()).long().cpu(),
                          model.image_shape, data.object_shape)

    # ------------------------------------------------------------------ priors
    def _default_probe(self) -> torch.Tensor:
        return default_probe(self.data, self.model, self.cdt)

    def _fourier_object_prior(self) -> torch.Tensor:
        """Upsampled amplitude of the most central LED's image (zero phase)."""
        img = torch.sqrt(self.frames[self.centre_led])[None, None]
        up = torch.nn.functional.interpolate(img, size=self.data.object_shape, mode="bicubic",
                                             align_corners=False)[0, 0]
        return up.clamp(min=0).to(self.cdt)

    @torch.no_grad()
    def _power_ratio(self, obj, probe, fields) -> float:
        n = self.data.n_frames
        idx = torch.linspace(0, n - 1, min(n, 16), device=self.device).round().long().unique()
        pred = self.model(obj, probe, idx, **fields)
        f = self.frames[idx]
        if self.detector_mask is not None:  # like with like: the measured pixels only
            f, pred = f[..., self.detector_mask], pred[..., self.detector_mask]
        return float(f.sum() / pred.sum().clamp(min=1e-30))

    def _pupil_base(self) -> torch.Tensor:
        p = self.model.pupil_function().to(self.cdt)
        return p if self.pupil_prior is None else p * self.pupil_prior

    def fields(self) -> list[Field]:
        return [f for f in (self.obj_field, self.probe_field, self.surface_field,
                            self.pupil_field) if f is not None]

    def set_epoch_lr(self, epoch: int):
        o = self.opts
        t = epoch / max(1, o.epochs)
        cos = lambda end: end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))  # noqa: E731
        f = cos(o.lr_decay)
        f_modes = f * cos(o.lr_mode_decay)
        for g in self.optim.param_groups:
            frozen = (g.get("physical", False) and epoch < o.warmup_epochs) or (
                g.get("field") == "probe" and epoch < o.probe_warmup_epochs)
            g["lr"] = 0.0 if frozen else g["base_lr"] * (f_modes if g.get("modes") else f)

    # ------------------------------------------------------------------ evaluation
    def probe(self):
        if self.probe_field is None:
            return self.probe_fixed
        if self.aperture is not None:  # the learned aperture in place of the fixed prior
            return self.aperture() + self.probe_field.full()[1]
        p = self.probe_field.full()[0]
        return p if self.mode_gains is None else p * self.mode_gains.exp()[:, None, None]

    def extra_fields(self) -> dict:
        out = {}
        if self.surface_fixed is not None:
            out["surface"] = (self.surface_fixed if self.surface_field is None
                              else self.surface_field.full()[0])
        if self.fourier:
            base = self._pupil_base()
            out["pupil"] = base if self.pupil_field is None else base + self.pupil_field.full()[0]
        return out

    def predict(self, idx: torch.Tensor, idx_host: torch.Tensor | None = None):
        """Predicted normalised intensities of frames ``idx`` and the object residual
        (``idx_host``: ``idx`` on the host, which spares the device reads)."""
        fields = self.extra_fields()
        if self.fourier:
            obj, res = self.obj_field.full()
            waves = self.model.exit_waves(obj, self.probe(), idx, check=not self.spectrum_checked)
            wave = self.model.to_detector(waves, idx, **fields)
            return self.model.intensity(wave, idx), res
        pos = self.scan_positions(idx)
        y0, x0, h, w = self.object_box(idx, idx_host)
        where = self.under_windows(idx, y0, x0, h, w, idx_host) \
            if self.opts.eval_region == "windows" else None
        region, res = self.obj_field.region(y0, x0, h, w, where)
        if y0 or x0:
            pos = pos - torch.tensor([y0, x0], dtype=pos.dtype).to(pos.device, non_blocking=True)
        # frozen corners were checked at setup; a learned position is checked each step
        patches = extract_patches(region, pos, self.window, check=self.corners_host is None)
        psi = self.model.exit_from_patches(self.probe(), patches)
        return self.model.intensity(self.model.to_detector(psi, idx, **fields), idx), res

    @torch.no_grad()
    def constrain(self):
        """Keep learned geometry meaningful after a step."""
        m = self.model
        if self.affine is not None:  # the model's positions follow the map (boxes, results)
            m.positions.copy_(self.scan_positions(torch.arange(len(self.pos0),
                                                               device=self.pos0.device)))
        elif self.pos0 is not None:
            p = m.wavevectors if self.fourier else m.positions
            if self.opts.learn_positions == "local":
                p.sub_(affine_part(p - self.pos0, self.pos0))
            elif self.opts.fix_mean_position:
                p.sub_(p.mean(0) - self.pos0.mean(0))
            if not self.fourier:
                p.copy_(self.on_canvas(p))
        if "intensity_factors" in self.learned:
            f = m.intensity_factors
            f.clamp_(min=1e-3).div_(f.mean())
        if "background_raw" in self.learned:
            m.background_raw.clamp_(min=0)
        if "zernike" in self.learned and 1 in m.zernike_indices:
            m.zernike[m.zernike_indices.index(1)] = 0.0  # piston: a global phase


def _resolve(data, options, model, dtype_name, device):
    rdt = torch.float64 if dtype_name == "float64" else torch.float32
    cdt = torch.complex128 if rdt == torch.float64 else torch.complex64
    model = model if model is not None else model_for(data, dtype=rdt)
    return model.to(device=device), rdt, cdt


def reconstruct_rnf(
    data: PtychoData,
    options: RNFOptions | None = None,
    *,
    object_prior=None,
    probe_prior=None,
    surface_prior=None,
    pupil_prior=None,
    model: ForwardModel | None = None,
    callback: Callback | None = None,
    checkpoint: str | Path | None = None,
) -> ReconstructionResult:
    """Reconstruct ``data`` with residual neural fields and a differentiable forward model.

    Parameters
    ----------
    data : PtychoData
        Any of the four modalities.
    options : RNFOptions, optional
    object_prior : complex ``object_shape``, optional
        Default: uniform (scanning modalities; its level is fitted to the counts when the
        probe is given) or the upsampled central-LED amplitude (Fourier).
    probe_prior : complex ``frame_shape`` (Fourier: ``object_shape`` illumination), optional
        Default ``data.probe``, else the back-propagated root-mean frame (far/near field),
        a plane wave (coded), no illumination envelope (Fourier).
    surface_prior : complex ``frame_shape``, optional
        Coded surface; default the model's (``data.meta["surface"]`` when calibrated).
    pupil_prior : complex ``frame_shape``, optional
        Fourier: the start pupil (a calibrated pupil, defocus included); the model's
        learned Zernike terms and distance act on it.
    model : ForwardModel, optional
        Default :func:`model_for` (nominal geometry). Learned parameters are written to it.
    callback : ``callback(epoch, info)`` after each epoch; ``info`` has ``epoch``,
        ``loss``, ``data_loss``, ``reg_loss``, ``time``, ``elapsed``, ``lr``, ``params``
        and ``object``, a function returning the current object (complex64, evaluated
        only when called). Raising in it stops the run (after the checkpoint is written).
    checkpoint : path, optional
        State file, rewritten every ``checkpoint_every`` epochs and at the end. When it
        exists the run resumes from it -- only if it was written for the same frames,
        priors, nominal model and options (else
        :class:`~ptytasks.engines.checkpoint.StaleCheckpoint`, before any training); it is
        read without unpickling (a file holding Python objects raises ``CheckpointError``).

    Returns
    -------
    ReconstructionResult
        ``object``, ``probe``, ``positions_px`` / ``wavevectors``, ``pupil``, ``params``
        (``distance``, ``wavelength``, ``zernike`` list, ...), ``loss_history``, ``extras``
        (``surface``, ``object_residual``, ``probe_residual``, ``intensity_factors``,
        ``data_scale``, ``data_threshold`` (the smooth-L1 / Huber threshold used, in
        normalised amplitude units), ``data_loss_history``, ``reg_loss_history``).
    """
    opts = replace(options) if options is not None else RNFOptions()
    t_start = time.perf_counter()
    device = torch.device(opts.device)
    keep_heap(device)  # CPU: reuse freed activation buffers, no page faults per step
    model, rdt, cdt = _resolve(data, opts, model, opts.dtype, device)
    torch.manual_seed(int(opts.seed))
    st = _Setup(data, opts, model, (object_prior, probe_prior, surface_prior, pupil_prior),
                device, rdt, cdt)
    data_loss = make_data_loss(opts.loss, "intensity" if opts.loss == "poisson" else opts.domain,
                               delta=st.data_delta)
    gen = torch.Generator().manual_seed(int(opts.seed) + 7919)
    hist = {"loss": [], "data": [], "reg": [], "time": [], "best": math.inf, "stale": 0}
    start, inputs = 0, None
    if checkpoint is not None:
        # the file's probe where no prior is given, and the detector mask, are inputs too
        probe_in = probe_prior if probe_prior is not None else data.probe
        inputs = inputs_digest(st.frames, model.state_dict(),
                               (object_prior, probe_in, surface_prior, pupil_prior,
                                st.detector_mask))
        ck = load_checkpoint(checkpoint)
        if ck is not None:  # only when made from these inputs and options (else raises)
            start = restore_state(ck, checkpoint, st, gen, hist, opts, inputs)
    n = data.n_frames
    bs = st.batch
    spin = opts.from_modality("wavelet_spin", data)  # "auto": near field spun
    wavelet = (partial(wavelet_sparsity, mu=opts.mu, levels=opts.wavelet_levels, spin=spin)
               if opts.mu > 0 else None)
    graph = StepGraph(st, opts, data_loss, wavelet)
    stop = None
    if opts.plateau_patience > 0 and hist["stale"] >= opts.plateau_patience:
        start, stop = opts.epochs, start - 1  # a checkpoint of a run that had stopped
    for epoch in range(start, opts.epochs):
        t0 = time.perf_counter()
        st.set_epoch_lr(epoch)
        # on the host: the batches are drawn there (one read per epoch)
        pos = None if st.fourier else st.model.positions.detach().cpu()
        tot_d = tot_r = 0.0
        for step, idx_host in enumerate(batches(opts.batching, pos, n, bs, gen, "cpu")):
            # pinned and asynchronous: a plain copy to the GPU waits for the device
            idx = idx_host if device.type != "cuda" else \
                idx_host.pin_memory().to(device, non_blocking=True)
            if st.obj_field.annealed is not None:
                steps = math.ceil(n / bs)
                st.obj_field.annealed.set_progress(
                    (epoch + step / steps) / opts.anneal_epochs)
            out = graph.step(idx, idx_host)
            ld, lr_ = out if out is not None else \
                train_step(st, idx, idx_host, data_loss, wavelet)
            # summed on the device: a float() per step would wait for the GPU each step
            tot_d = tot_d + ld.double() * len(idx)
            tot_r = tot_r + lr_.double() * len(idx)
        tot_d, tot_r = float(tot_d), float(tot_r)
        hist["data"].append(tot_d / n)
        hist["reg"].append(tot_r / n)
        hist["loss"].append((tot_d + tot_r) / n)
        hist["time"].append(time.perf_counter() - t0)
        cur = hist["loss"][-1]
        if cur < hist["best"] * (1 - opts.plateau_tol):
            hist["best"], hist["stale"] = cur, 0
        else:
            hist["stale"] += 1
        done = epoch + 1
        plateau = opts.plateau_patience > 0 and hist["stale"] >= opts.plateau_patience
        if checkpoint is not None and (done % max(1, opts.checkpoint_every) == 0 or plateau
                                       or done == opts.epochs):
            save_state(checkpoint, st, gen, hist, done, opts, inputs)
        if callback is not None:
            callback(epoch, {
                "epoch": epoch, "loss": cur, "data_loss": hist["data"][-1],
                "reg_loss": hist["reg"][-1], "time": hist["time"][-1],
                "elapsed": time.perf_counter() - t_start,
                "lr": {g["name"]: g["lr"] for g in st.optim.param_groups},
                "params": physical_params(model), "object": lambda: current_object(st),
            })
        if plateau:
            stop = epoch
            break
    return rnf_result(st, opts, hist, t_start, stop, graph.info())

