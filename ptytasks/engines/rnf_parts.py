"""Building blocks of the RNF engine (:mod:`ptytasks.engines.rnf`).

* :func:`default_probe`: a probe guess from the data;
* :class:`Field`: a :class:`~ptytasks.fields.residual_field.ResidualField` evaluated on
  boxes of its grid (the batch's bounding box), optionally masked (a pupil aperture) and
  optionally coarse-to-fine (:class:`AnnealedEncoding`);
* :class:`Geometry`: distance and wavelength learned through a well-conditioned shadow;
* :func:`build_optimiser`: the optimiser of a run;
* :func:`rnf_result`: the result of a finished run.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from ptytasks.data import PtychoData
from ptytasks.engines.result import ReconstructionResult
from ptytasks.fields.phasor_kernels import kernels as field_kernels
from ptytasks.fields.residual_field import ResidualField
from ptytasks.physics.models.base import ForwardModel
from ptytasks.physics.modes import orthogonalize_modes, power_fractions


@torch.no_grad()
def default_probe(data: PtychoData, model: ForwardModel, cdtype=torch.complex64):
    """A probe guess from the data, the same as the PIE engines start from.

    Far and near field: the blind estimates of :func:`ptytasks.engines.pie.initial_probe`
    (:mod:`ptytasks.probe_estimate`); the root-mean frame taken back with a flat phase
    collapses to a few pixels within epochs. Coded ptychography gets a plane wave. The
    caller matches the power to the frames (``RNFOptions.rescale_prior``).
    """
    from ptytasks.modalities import modality_of

    if not modality_of(data).localized_probe:  # full-frame illumination: a plane wave
        return torch.ones(data.frame_shape, dtype=cdtype, device=model.positions.device)
    from ptytasks.engines.pie import initial_probe

    return initial_probe(data, model, model.positions.device, cdtype)


class AnnealedEncoding(nn.Module):
    """Coarse-to-fine hash encoding (BARF, Lin et al. 2021): level ``l`` is weighted by
    ``(1 - cos(pi clamp(alpha - l, 0, 1))) / 2`` while ``alpha`` grows from 1 to the number
    of levels. Early on the field can only hold coarse structure, which widens the capture
    range of jointly learned positions.
    """

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        n = len(inner.resolutions)
        self.register_buffer("weights", torch.ones(n * inner.config.n_features))

    @property
    def out_dim(self) -> int:
        return self.inner.out_dim

    def set_progress(self, t: float):
        """``t`` in [0, 1]: fraction of the annealing done."""
        n, f = len(self.inner.resolutions), self.inner.config.n_features
        alpha = 1 + (n - 1) * min(max(t, 0.0), 1.0)
        lv = torch.arange(n, dtype=torch.float64)
        w = 0.5 * (1 - torch.cos(math.pi * (alpha - lv).clamp(0, 1)))
        self.weights.copy_(w.repeat_interleave(f).to(self.weights))

    def encode_grid(self, ys, xs):
        return self.inner.encode_grid(ys, xs) * self.weights[:, None, None]

    def encode_points(self, coords):
        return self.inner.encode_points(coords) * self.weights[:, None]


class Field(nn.Module):
    """A :class:`ResidualField` evaluated on boxes, its learned part optionally masked.

    ``opts`` (:class:`~ptytasks.engines.rnf_options.RNFOptions`) gives the architecture
    (activation, frequencies, width, depth, encoding) and ``residual`` unless overridden;
    ``kernels`` the MLP's element-wise kernels (``RNFOptions.field_kernels``).
    """

    def __init__(self, shape, prior, opts, *, seed: int, mask=None, dtype,
                 anneal: bool = False, residual: bool | None = None, kernels: str = "eager"):
        super().__init__()
        mlp = {"activation": opts.activation, "first_omega": opts.omega,
               "hidden_omega": opts.hidden_omega, "learnable_omega": opts.learn_omega,
               "hidden_features": opts.hidden_features, "hidden_layers": opts.hidden_layers,
               "hidden_precision": opts.hidden_precision, "kernels": kernels}
        if opts.out_init_scale is not None:
            mlp["out_init_scale"] = opts.out_init_scale
        self.net = ResidualField(tuple(shape), prior, encoding=dict(opts.encoding), mlp=mlp,
                                 residual=opts.residual if residual is None else residual,
                                 seed=seed).to(dtype)
        self.shape = self.net.shape
        self.register_buffer("mask", None if mask is None else mask.detach().to(dtype).clone())
        self.annealed = None
        if anneal:
            self.annealed = AnnealedEncoding(self.net.encoding)
            self.net.encoding = self.annealed

    def region(self, y0: int, x0: int, h: int, w: int,
               where: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(field, learned part)`` on rows ``y0:y0+h``, columns ``x0:x0+w`` (the learned
        part only at ``where``, bool ``(h, w)``, when given)."""
        field, res = self.net.window(y0, x0, h, w, return_residual=True, where=where)
        if self.mask is not None:
            m = self.mask[y0:y0 + h, x0:x0 + w]
            field, res = field - res + res * m, res * m
        return field, res

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.region(0, 0, *self.shape)


class PixelField(nn.Module):
    """A prior plus a residual stored per pixel (no network): :class:`Field`'s interface.

    For the modes of a mixed-state probe: their shapes and power balance must move far
    from the start (a few per cent of the power in a guessed shape), which a neural
    residual on a hash encoding did not do in 100 epochs (the extra modes' power fell
    back towards zero), while per-pixel Adam steps do (``docs/modes-and-slices.md``).
    """

    direct = True

    def __init__(self, prior: torch.Tensor, *, dtype):
        super().__init__()
        self.shape = tuple(int(s) for s in prior.shape[-2:])
        self.register_buffer("prior", prior.detach().clone())
        self.residual = nn.Parameter(torch.zeros(2, *prior.shape, dtype=dtype))

    def region(self, y0: int, x0: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        res = torch.complex(self.residual[0], self.residual[1])[..., y0:y0 + h, x0:x0 + w]
        return self.prior[..., y0:y0 + h, x0:x0 + w] + res, res

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.region(0, 0, *self.shape)


def field_groups(fields: dict, opts) -> list[dict]:
    """AdamW groups of the residual fields ``{name: (field or None, rate multiplier)}``.

    Each field's hash tables and MLP weights get their own group, at ``opts.lr`` times the
    field's multiplier times ``opts.lr_tables_scale`` / ``opts.lr_mlp_scale`` (why:
    :class:`~ptytasks.engines.rnf_options.RNFOptions`); phasor frequencies are left out.
    Groups are named ``<field>_tables`` and ``<field>_mlp`` and carry ``field``.
    """
    groups = []
    for name, (fld, scale) in fields.items():
        if fld is None:
            continue
        if getattr(fld, "direct", False):  # per-pixel residual (mixed-state probe modes)
            groups.append({"params": list(fld.parameters()), "lr": opts.lr_mode_pixels,
                           "name": f"{name}_pixels", "field": name, "modes": True})
            continue
        named = [(n, p) for n, p in fld.named_parameters() if not n.endswith("omega")]
        for part, mult, tables in (("tables", opts.lr_tables_scale, True),
                                   ("mlp", opts.lr_mlp_scale, False)):
            ps = [p for n, p in named if (".encoding." in n) == tables]
            if ps:
                groups.append({"params": ps, "lr": opts.lr * scale * mult,
                               "name": f"{name}_{part}", "field": name})
    return groups


class Geometry:
    """Distance and wavelength learned through a well-conditioned linear shadow.

    ``u_z = (z - z0) / z_ref`` and ``u_l = (lambda - lambda0) / lambda_ref`` are relative
    changes (``ref``: the nominal value, or the depth of field ``lambda / NA^2`` for a
    nominal defocus of 0). When both are learned the optimiser sees ``s = u_l + u_z`` (the
    Fresnel product ``lambda z``, well determined) and ``t = u_l - u_z`` (determined only
    by non-paraxial propagation); Adam then moves the weak combination at its own rate
    instead of zig-zagging across the ``lambda z`` valley. Gradients reach the model's own
    parameters and are pulled back onto the shadow by the chain rule.
    """

    def __init__(self, model, names: list[str], lr: float):
        self.model, self.names, self.lr = model, names, lr
        ps = [getattr(model, n) for n in names]
        self.start = [float(p.detach()) for p in ps]
        na = max(float(getattr(model, "na", 0.1)), 1e-3)
        self.ref = [abs(v) if v != 0 else float(model.wavelength) / na**2 for v in self.start]
        dt = ps[0].dtype if ps else torch.float32
        # columns: d u_name / d shadow
        basis = [[1.0]] if len(names) < 2 else [[0.5, -0.5], [0.5, 0.5]]  # (z, l) <- (s, t)
        self.basis = torch.tensor(basis[: len(names)], dtype=torch.float64)
        dev = ps[0].device if ps else None
        self.shadow = nn.Parameter(torch.zeros(len(names), dtype=dt, device=dev))

    def pull_grad(self):
        if not self.names:
            return
        g = []
        for n, r in zip(self.names, self.ref, strict=True):
            p = getattr(self.model, n)
            g.append(0.0 if p.grad is None else float(p.grad) * r)
            p.grad = None
        self.shadow.grad = (self.basis.T @ torch.tensor(g, dtype=torch.float64)).to(self.shadow)

    @torch.no_grad()
    def push(self):
        if not self.names:
            return
        u = self.basis @ self.shadow.detach().double().cpu()
        for n, v0, r, du in zip(self.names, self.start, self.ref, u.tolist(), strict=True):
            getattr(self.model, n).fill_(v0 + r * du)


#: Adam's eps for the background: where the data need no floor its gradient is ~1e-3 and
#: Adam's normalised step (~lr, a tenth of the frame's mean) made it jitter, which cost the
#: object up to 1.6x on simulated FPM without a floor; with eps 1e-2 small gradients take
#: small steps (chosen between 1e-8, 1e-2 and 1e-1 on tuning data, docs/rnf.md).
BACKGROUND_EPS = 1e-2
#: Adam's eps for ``learn_positions="local"``: about the median ``sqrt(v)`` of the position
#: gradients at the end of an exact-scan tuning run (7e-4; ff-25-1e6 case 101), so frames
#: whose gradient is noise move less than ``lr_positions`` per step.
LOCAL_POSITION_EPS = 1e-3


def build_optimiser(st) -> None:
    """The run's AdamW over its fields and learned model parameters (``st``: its
    ``rnf._Setup``); sets ``st.optim``, ``st.learned``, ``st.geometry``, ``st.pos0``."""
    o, m = st.opts, st.model
    if o.learn_zernike and not st.fourier:
        raise ValueError("learn_zernike needs Fourier-ptychography data")
    names = []
    if o.learn_positions in ("affine", "local") and st.fourier:
        raise ValueError(f"learn_positions={o.learn_positions!r} needs scanning data (Fourier "
                         "ptychography learns its LED wavevectors with learn_positions=True)")
    if o.learn_positions is True or o.learn_positions == "local":
        names.append("wavevectors" if st.fourier else "positions")
    for flag, name in ((o.learn_distance, "distance"), (o.learn_wavelength, "wavelength"),
                       (o.learn_zernike, "zernike"), (o.learn_intensity, "intensity_factors")):
        if flag:
            if not hasattr(m, name):
                raise ValueError(f"{m.modality} model has no parameter {name!r} to learn")
            names.append(name)
    if o.from_modality("learn_background", st.data):
        # started at each frame's minimum (chosen among its 0th, 1st and 5th percentile on
        # simulated FPM tuning data; the 5th cost up to 18 % on frames without a floor;
        # bench/results/records/rnf-background-*.json), in units of the frame's mean
        flat = st.frames.flatten(1) if st.detector_mask is None else \
            st.frames[..., st.detector_mask]  # the measured pixels only
        m.enable_background(flat.amin(1), flat.mean(1))
        names.append("background_raw")
    m.learnable(*names)
    st.learned = names
    omega = lambda mod: [p for n, p in mod.named_parameters() if n.endswith("omega")]
    groups = field_groups({"object": (st.obj_field, 1.0),
                           "probe": (st.probe_field, o.lr_probe_scale),
                           "surface": (st.surface_field, o.lr_surface_scale),
                           "pupil": (st.pupil_field, o.lr_pupil_scale)}, o)
    if st.mode_gains is not None:
        groups.append({"params": [st.mode_gains], "lr": o.lr_mode_gains, "modes": True,
                       "name": "mode_gains", "field": "probe", "weight_decay": 0.0})
    if st.aperture is not None:  # learned from the first epoch (the residual waits)
        groups.append({"params": [st.aperture.params], "lr": o.lr_aperture,
                       "name": "probe_aperture", "weight_decay": 0.0})
    # one group per field, tagged: a field's warm-up (the probe's) freezes its frequencies too
    for fname, f in (("object", st.obj_field), ("probe", st.probe_field),
                     ("surface", st.surface_field), ("pupil", st.pupil_field)):  # fmt: skip
        om = list(omega(f)) if f is not None else []
        if om:
            groups.append({"params": om, "lr": o.lr_omega, "name": f"omega_{fname}",
                           "field": fname, "weight_decay": 0.0})
    st.affine = None
    if o.learn_positions == "affine":
        # D of p = c + (I + D)(p0 - c); its rate makes an edge frame move ~lr_positions px
        p0 = m.positions.detach()
        r_rms = float(((p0 - p0.mean(0)) ** 2).sum(1).mean().sqrt().clamp(min=1.0))
        st.affine = torch.zeros(2, 2, dtype=p0.dtype, device=p0.device, requires_grad=True)
        groups.append({"params": [st.affine], "lr": o.lr_positions / r_rms,
                       "name": "position_affine", "weight_decay": 0.0, "physical": True})
    st.geometry = Geometry(m, [n for n in names if n in ("distance", "wavelength")],
                              o.lr_distance if o.learn_distance else o.lr_wavelength)
    if st.geometry.names:
        groups.append({"params": [st.geometry.shadow], "lr": st.geometry.lr,
                       "name": "geometry", "weight_decay": 0.0, "physical": True})
    for name in names:
        if name in ("distance", "wavelength"):
            continue
        p = getattr(m, name)
        if name == "positions":
            lr = o.lr_positions
        elif name == "wavevectors":
            lr = o.lr_positions / float(m.k_to_px.mean())
        elif name == "zernike":
            lr = o.lr_zernike
        elif name == "background_raw":
            lr = o.lr_background
        else:
            lr = o.lr_intensity
        group = {"params": [p], "lr": lr, "name": name, "weight_decay": 0.0, "physical": True}
        if name == "background_raw":
            group["eps"] = BACKGROUND_EPS
        elif name == "positions" and o.learn_positions == "local":
            group["eps"] = LOCAL_POSITION_EPS
        groups.append(group)
    for g in groups:
        g["base_lr"] = g["lr"]
    # fused: one kernel per tensor instead of ~10 passes; the same update to float
    # rounding, 2.5-8x faster on CPU over the 2^19-row tables of level_policy="paper"
    # (bench/bench_fields.py, bench/bench_rnf.py throughput). Fall back to foreach
    # where a device lacks the kernel. On CUDA the step count stays on the device
    # (capturable), so a CUDA graph can replay the update (rnf_step).
    cuda = st.device.type == "cuda"
    try:
        st.optim = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas,
                                       weight_decay=o.weight_decay, fused=True,
                                       capturable=cuda)
    except RuntimeError:
        st.optim = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas,
                                       weight_decay=o.weight_decay, foreach=True,
                                       capturable=cuda)
    st.pos0 = None
    if o.learn_positions:  # True, "affine" or "local"
        p = m.wavevectors if st.fourier else m.positions
        st.pos0 = p.detach().clone()


def physical_params(model: ForwardModel) -> dict:
    """Scalar physical parameters (and the Zernike list) as plain floats, for results."""
    out = {}
    for name, p in model.physical_parameters().items():
        if p.numel() == 1:
            out[name] = float(p)
        elif name == "zernike":
            out[name] = [float(v) for v in p]
    return out


@torch.no_grad()
def current_object(st, obj: torch.Tensor | None = None) -> np.ndarray:
    """The object of run setup ``st`` as the result holds it (Fourier: on the measured band,
    in data units); ``obj``: the object field's output when the caller has it already."""
    obj = st.obj_field.full()[0] if obj is None else obj
    if st.fourier:
        obj = measured_band(st, obj) * math.sqrt(st.scale)
    return obj.cpu().numpy().astype(np.complex64)


def measured_band(st, obj: torch.Tensor) -> torch.Tensor:
    """The field's object on the band the images measure, where the modality says so
    (``Modality.band_only_object``; Fourier: the synthetic aperture,
    :meth:`~ptytasks.physics.models.fourier.FourierPtychography.band_limited`, at the
    run's wavevectors). No image constrains the field's spectrum beyond it, and what the
    field puts there is not the specimen's (hypothesis 70, docs/rnf.md); the classical
    engines never leave the band. Left whole under an illumination envelope, where the
    images see ``obj * probe``."""
    from ptytasks.modalities import modality_of

    if not modality_of(st.data).band_only_object or st.probe() is not None:
        return obj
    return st.model.band_limited(obj)


# ---------------------------------------------------------------------- result
@torch.no_grad()
def rnf_result(st, opts, hist, t_start, stop, cuda_graph: dict) -> ReconstructionResult:
    """The :class:`ReconstructionResult` of a finished RNF run (``st``: its
    ``rnf._Setup``; ``cuda_graph``: its ``StepGraph.info()``): fields in the data's units,
    probe modes orthogonalised, extras."""
    amp = math.sqrt(st.scale)
    obj, res = st.obj_field.full()
    probe = st.probe()
    extras = {"data_scale": st.scale, "data_threshold": st.data_delta,
              "data_loss_history": hist["data"],
              "epoch_seconds": list(hist["time"]),
              "reg_loss_history": hist["reg"], "object_residual": res.cpu().numpy(),
              "stopped_early_at": stop, "learned": list(st.learned),
              "batch_size": st.batch,  # as run (``batch_size="auto"`` resolved)
              "data_term": {"loss": opts.loss, "mu": float(opts.mu),
                            "probe_warmup_epochs": int(opts.probe_warmup_epochs),
                            "wavelet_spin": opts.from_modality("wavelet_spin", st.data),
                            **({"rule": st.data_term} if st.data_term else {})},
              # as run: a compiled set that fell back reads "eager"
              "field_kernels": field_kernels(st.kernels).mode,
              "cuda_graph": cuda_graph}
    if st.probe_field is not None:
        extras["probe_residual"] = (st.probe_field.full()[1] * amp).cpu().numpy()
    if st.aperture is not None:
        extras["probe_aperture"] = st.aperture.report()
    fields = st.extra_fields()
    if "surface" in fields:
        extras["surface"] = fields["surface"].cpu().numpy()
    m = st.model
    if "intensity_factors" in st.learned:
        extras["intensity_factors"] = m.intensity_factors.detach().cpu().numpy()
    if st.affine is not None:  # the learned map of the scan, I + D (y, x)
        extras["position_affine"] = (torch.eye(2, dtype=st.affine.dtype)
                                     + st.affine.detach().cpu()).numpy()
    if "background_raw" in st.learned:  # in the input frames' units
        extras["background"] = (m.background().detach() * st.scale).cpu().numpy()
    if st.fourier:
        probe = None if probe is None else probe * amp
        extras["zernike_indices"] = list(m.zernike_indices)
    else:
        probe = probe * amp
        if probe.dim() == 3:  # modes: the mixed state's orthogonal eigenmodes
            probe = orthogonalize_modes(probe)
            extras["mode_power_fractions"] = power_fractions(probe).cpu().numpy()
    t = hist["time"]
    return ReconstructionResult(
        object=current_object(st, obj),
        probe=None if probe is None else probe.cpu().numpy().astype(np.complex64),
        positions_px=None if st.fourier else m.positions.detach().cpu().double().numpy(),
        wavevectors=m.wavevectors.detach().cpu().double().numpy() if st.fourier else None,
        pupil=fields["pupil"].cpu().numpy().astype(np.complex64) if st.fourier else None,
        params=physical_params(m),
        loss_history=list(hist["loss"]),
        timings={"total": time.perf_counter() - t_start,
                 "per_epoch": float(np.mean(t)) if t else 0.0,
                 "frames_per_s": st.data.n_frames / float(np.mean(t)) if t else 0.0},
        engine="rnf",
        options=opts.to_dict(),
        extras=extras,
    )


def affine_part(delta: torch.Tensor, p0: torch.Tensor) -> torch.Tensor:
    """The least-squares affine map (shift + 2 x 2 linear part about the centroid of
    ``p0``) of the corrections ``delta`` (n, 2) over the start positions ``p0`` (n, 2),
    evaluated at ``p0``, px: the part of a position correction that is a calibration of the
    whole scan rather than a frame's own error."""
    x = torch.cat([p0 - p0.mean(0), torch.ones_like(p0[:, :1])], 1).double()
    coef = torch.linalg.lstsq(x, delta.double()).solution
    return (x @ coef).to(delta.dtype)


def slices_of(obj: torch.Tensor) -> int:
    """Slices of an object ``(ny, nx)`` or ``(S, ny, nx)``: the transmission's power is
    shared among them (a gain ``g`` on the product is ``g^(1/S)`` on each slice)."""
    return obj.shape[0] if obj.dim() == 3 else 1
