"""The ``learned`` engine: single-shot network inversion of every frame, then stitching.

Each far-field frame goes through a trained PPN (or PtychoNN) network
(:mod:`ptytasks.learned.inversion`), which predicts the object's amplitude and phase on the
central ``M x M`` part of that frame's probe window. The patches are stitched by
probe-weighted averaging, ``O = sum_i w_i c_i O_i / sum_i w_i`` with ``w = |P|^2`` on the
patch, after an optional phase alignment: a frame cannot see a constant phase of its
patch, so the networks are trained on patches referenced to their mean phase and the unit
phasors ``c_i`` are chosen to agree with the mosaic, ``c_i = phase(sum w_i conj(O_i) O)``
(least squares): first in one pass that grows the mosaic from the scan's centre, then in a
few simultaneous sweeps (the mean correction is removed, so the global phase stays the
trained reference). Simultaneous sweeps alone converge slowly: from exact patches, four
left the stitched phase SSIM at 0.70-0.85 on 64-400-position scans. Networks trained on
single-material objects predict absolute phases (the amplitude a frame sees fixes the
phase), so their patches are averaged without alignment. No iterations over the data: the
runtime is one batched forward pass plus the stitching.

Frames of another size than the network's (``N x N`` against ``n x n``): the committed
preset's set for ``N`` is used when there is one (``ppn_default_64.pt`` for the
simulator's default 64 x 64 frames); otherwise the frames are resampled by keeping the
window and changing the pixel (:mod:`ptytasks.learned.frame_mapping`): the central
``n x n`` detector pixels are kept (``N > n``; the extra pixels are the highest angles) or
the frame is zero-padded (``N < n``), so the network works at the real-space pixel
``dx' = lambda z / (n dp) = (N / n) dx`` over the same window ``lambda z / dp``. Binning
would keep ``dx`` but shrink the window ``k``-fold, so a probe footprint of ``0.35 N``
pixels (the simulator's, at every ``N``) would fill ``0.7`` of the network's window
instead of the ``0.35`` it was trained with; the crop keeps it at ``0.35``. The probe
prior goes through the same crop of its far field (its ``sum |P'|^2``, the photons on the
kept pixels, is the flux the input is normalised by); the ``M x M`` output is interpolated
back to the data's pixels (network pixel ``j`` at data pixel ``(N / n) j``) and stitched
there with the data's ``|P|^2``, so positions, pixel size and object shape stay the data's.
A resampled frame still comes from the data's probe: when its far-field amplitude differs
from the training probe's (``extras["probe_match"]`` below 0.95) the engine warns that the
output is not to be trusted (``docs/learned.md``: the simulator's 64 x 64 zone plate has a
Fresnel number twice the 32 x 32 one's, and no resampling changes that).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.engines.options import EngineOptions
from ptytasks.engines.result import ReconstructionResult


@dataclass
class LearnedOptions(EngineOptions):
    """Options of :func:`reconstruct_learned`.

    Attributes
    ----------
    model : {"ppn", "ptychonn"}
        Which committed default weights to use when ``weights`` is None.
    weights : str or None
        Path of weights written by :func:`ptytasks.learned.inversion.save_inversion`, or a
        committed preset: ``"default"`` (None) or ``"layout"``
        (:data:`ptytasks.learned.inversion.PRESETS`); a preset takes its set for the
        data's frame side when one is committed (``ppn_default_64.pt``), else resamples.
    batch_size : int
        Frames per forward pass (128: 7 % faster than 64 on 2 CPU cores, no gain above).
    align_phase : bool or None
        Align the patches' constant phases before averaging. None: unless the network
        predicts absolute phases (trained on single-material objects, whose amplitude fixes
        the phase).
    align_iterations : int
        Sweeps of the phase alignment.
    flux : float or None
        Photons per frame of the probe; default ``sum |P|^2`` of the probe prior (or the
        dataset's probe), else the median frame sum divided by the training mean ``|O|^2``.
    threads : int or None
        torch CPU threads during inference (None: leave as is).
    precision : {"auto", "float32", "bfloat16"}
        Arithmetic of the network's forward pass. ``"auto"``: bfloat16 autocast where the
        device runs it natively (CPUs with AVX512-BF16/AMX, CUDA GPUs with bf16), else
        float32. Measured here: 1.65x faster on the CPU, largest phase change 0.017 rad
        against per-pixel prediction errors of ~0.2 rad (``bench/results/learned-vm.md``).
    seed : int
        Unused (the engine is deterministic); accepted so generic settings pass through.
    """

    model: str = "ppn"
    weights: str | None = None
    batch_size: int = 128
    align_phase: bool | None = None
    align_iterations: int = 4
    flux: float | None = None
    threads: int | None = None
    precision: str = "auto"
    seed: int = 0

    def __post_init__(self):
        # refused when the settings are read, not in a tile after the cluster started
        if self.model not in ("ppn", "ptychonn"):
            raise ValueError(f"model must be 'ppn' or 'ptychonn'; got {self.model!r}")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be auto, float32 or bfloat16; got "
                             f"{self.precision!r}")
        for name, least in (("batch_size", 1), ("align_iterations", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}; got {v!r}")
        if self.flux is not None and (isinstance(self.flux, bool) or not self.flux > 0):
            raise ValueError(f"flux must be a positive number of photons; got {self.flux!r}")


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain float32)."""
    if precision == "float32":  # (LearnedOptions has checked the value)
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    try:  # oneDNN's own check for native bf16 (AVX512-BF16 / AMX)
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return torch.bfloat16 if device.type == "cpu" and native else None


def _store_weights_as(net: torch.nn.Module, dtype: torch.dtype) -> None:
    """Keep convolution and linear weights in the autocast ``dtype`` (in place).

    Autocast would otherwise cast every weight on every call (1.2x of the forward pass on
    this CPU); the results are the same, and the other parameters (norms, PoCA's centre and
    weights) stay float32.
    """
    for mod in net.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            mod.to(dtype)


def _fill_masked(frames: np.ndarray, meta: dict, sweeps: int = 64) -> np.ndarray:
    """``frames`` with the pixels the detector mask leaves out filled from their measured
    neighbours (Jacobi sweeps of the 4-neighbour mean over the masked pixels only, so a
    module gap a few pixels wide is bridged smoothly): the network has no notion of a gap,
    and a gap's zeros (or a saturated marker) read as a stripe of diffraction."""
    from ptytasks.engines.pie_state import detector_mask_of

    use = detector_mask_of(meta)
    if use is None or use.all() or use.shape != frames.shape[1:]:
        return frames
    f = np.array(frames, np.float32)
    bad = ~use
    f[:, bad] = 0.0
    valid = use.astype(np.float32)
    for _ in range(sweeps):  # mean of the neighbours that hold a value so far
        pad = np.pad(f, ((0, 0), (1, 1), (1, 1)))
        wpad = np.pad(valid, 1)
        num = pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
        den = wpad[:-2, 1:-1] + wpad[2:, 1:-1] + wpad[1:-1, :-2] + wpad[1:-1, 2:]
        fill = num[:, bad] / np.maximum(den[bad], 1e-6)[None, :]
        f[:, bad] = np.where(den[bad][None, :] > 0, fill, 0.0)
        valid = np.where(bad, (den > 0).astype(np.float32), valid)
    return f


def _flux(frames: torch.Tensor, probe: np.ndarray | None, noise, given: float | None) -> float:
    """Photons per frame of the probe on the network's detector (``frames``: ``(k, n, n)``)."""
    if given:
        return float(given)
    if probe is not None:
        return float(np.sum(np.abs(probe) ** 2))
    a0, a1 = noise.amplitude_range
    mean_t2 = (a0 * a0 + a0 * a1 + a1 * a1) / 3  # E|O|^2 for amplitudes uniform on [a0, a1]
    return float(np.median(frames.numpy().reshape(len(frames), -1).sum(1)) / mean_t2)


def _grow_phases(patches: np.ndarray, weight: np.ndarray, corners: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
    """Unit phasors aligning ``patches`` in one pass that grows the mosaic from the centre.

    Patches are visited by distance from the scan's centre; each takes the phase that best
    agrees with the mosaic of those already placed (least squares), then joins it. Exact for
    noise-free patches whatever the scan size, where simultaneous (Jacobi) sweeps need a
    number of sweeps growing with the scan's extent.
    """
    m = patches.shape[-1]
    pos = np.asarray(corners, np.int64)
    order = np.argsort(((pos - pos.mean(0)) ** 2).sum(1), kind="stable")
    num = np.zeros(shape, np.complex128)
    den = np.zeros(shape, np.float64)
    c = np.ones(len(pos), np.complex128)
    wp = weight[None] * patches  # w O_i
    for i in order:
        sl = (slice(pos[i, 0], pos[i, 0] + m), slice(pos[i, 1], pos[i, 1] + m))
        d = den[sl]
        z = np.vdot(wp[i], np.divide(num[sl], d, out=np.zeros_like(num[sl]), where=d > 0))
        c[i] = z / abs(z) if abs(z) > 0 else 1.0
        num[sl] += c[i] * wp[i]
        den[sl] += weight
    return c


def stitch_patches(patches: torch.Tensor, corners: np.ndarray, weight: torch.Tensor,
                   shape: tuple[int, int], *, align_phase: bool = True, iterations: int = 4
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Probe-weighted average of complex ``patches`` ``(n, M, M)`` at integer ``corners``.

    Parameters
    ----------
    patches : complex tensor ``(n, M, M)``
    corners : ``(n, 2)`` integer top-left corners of the patches, object pixels
    weight : real tensor ``(M, M)`` (``|P|^2`` on the patch)
    shape : object shape ``(ny, nx)``
    align_phase, iterations : phase alignment (module docstring): one growing pass from the
        scan's centre, then ``iterations`` simultaneous least-squares sweeps.

    Returns
    -------
    object : complex64 ``shape`` (1 where no patch has weight), weight : float32 ``shape``.
    """
    from ptytasks.physics.shifts import extract_patches, insert_patches

    pos = torch.as_tensor(corners, dtype=torch.float64)
    m = patches.shape[-1]
    w = weight.to(torch.float32).expand(len(pos), m, m)
    den = insert_patches(w, pos, shape, subpixel=False)
    safe = den.clamp_min(1e-12 * float(den.max()))
    c = patches.to(torch.complex64)
    if align_phase and len(c):
        ph = _grow_phases(c.numpy(), weight.to(torch.float32).numpy(), np.rint(corners), shape)
        ph = ph / np.exp(1j * np.angle(ph.mean()))  # keep the trained reference
        c = c * torch.from_numpy(ph.astype(np.complex64))[:, None, None]
    for _ in range(iterations if align_phase else 0):
        mosaic = insert_patches(w * c, pos, shape, subpixel=False) / safe
        z = (w * c.conj() * extract_patches(mosaic, pos, (m, m), subpixel=False)).sum((-2, -1))
        ang = torch.angle(z)
        ang = ang - torch.angle(torch.exp(1j * ang).mean())  # keep the trained reference
        c = c * torch.exp(1j * ang)[:, None, None].to(c.dtype)
    obj = insert_patches(w * c, pos, shape, subpixel=False) / safe
    obj = torch.where(den > 1e-6 * float(den.max()), obj, torch.ones_like(obj))
    return obj.numpy().astype(np.complex64), den.numpy().astype(np.float32)


def _patch_coverage(den: np.ndarray, probe: np.ndarray, positions_px, shape) -> float:
    """Share of the illuminated field (summed ``|P|^2`` >= 10 % of its peak) under a patch.

    The networks predict only the central ``M x M`` of each window; a scan whose step
    exceeds ``M`` leaves illuminated pixels without a prediction (set to 1), so say so.
    """
    from ptytasks.physics.shifts import coverage

    p2 = torch.as_tensor(np.abs(probe) ** 2, dtype=torch.float32)
    pos = torch.as_tensor(np.rint(np.asarray(positions_px, np.float64)))
    lit = coverage(pos, tuple(p2.shape), shape, p2).numpy()
    lit = lit >= 0.1 * lit.max()
    share = float(np.mean(den[lit] > 0)) if lit.any() else 1.0
    if share < 0.99:
        warnings.warn(f"learned engine: the predicted patches cover {share:.0%} of the "
                      "illuminated field (the scan step exceeds the network's output size); "
                      "the rest is left at 1", stacklevel=3)  # fmt: skip
    return share


def reconstruct_learned(data: PtychoData, options: LearnedOptions | None = None, *,
                        probe_prior=None, model=None, callback=None) -> ReconstructionResult:
    """Reconstruct far-field ``data`` by single-shot inversion of every frame.

    Parameters
    ----------
    data : PtychoData
        Far-field frames (centred, square, any side ``N``). A committed preset uses its set
        for ``N`` when there is one; otherwise frames of another side than the network's
        are cropped (padded) to it and the output interpolated back (module docstring).
    options : LearnedOptions
    probe_prior : array ``(N, N)``, optional
        Probe for the flux and the stitching weights (default ``data.probe``, else the
        network's training probe scaled to the estimated flux).
    model : torch module, optional
        A loaded network (default: :func:`ptytasks.learned.inversion.load_inversion`).
    callback : ``callback(0, info)`` once, with ``time`` and ``elapsed`` seconds.

    Returns
    -------
    ReconstructionResult
        On the data's grid (its pixel size, positions and object shape); ``extras`` add
        ``frame_mapping`` (``mode`` none/crop/pad, ``data_size``, ``net_size``, ``scale``
        data pixels per network pixel), ``probe_match`` and ``weights`` (the file read).
    """
    from ptytasks.learned.frame_mapping import FrameMapping, footprint_ratio, probe_match
    from ptytasks.learned.inversion import load_inversion, resolve_weights
    from ptytasks.learned.single_shot_data import normalize_frames, zone_plate

    opts = options or LearnedOptions()
    from ptytasks.modalities import modality_of

    if not modality_of(data).far_field_detector:
        raise ValueError(f"the learned engine inverts far-field frames; got {data.modality!r}")
    shape = tuple(data.frame_shape)
    if shape[0] != shape[1]:
        raise ValueError(f"the learned engine needs square frames; data has "
                         f"{shape[0]}x{shape[1]}")  # fmt: skip
    t0 = time.perf_counter()
    source = "model"
    if model is None:
        source = str(resolve_weights(opts.weights, opts.model, shape[0]))
        net = load_inversion(source, model=opts.model)
    else:
        net = model
    geo, noise = net.config.geometry, net.config.noise
    mapping = FrameMapping(int(shape[0]), int(geo.frame_size))
    probe = probe_prior if probe_prior is not None else data.probe
    probe = None if probe is None else np.asarray(probe)
    power = None if probe is None else float(np.sum(np.abs(probe) ** 2))  # every mode's
    if probe is not None and probe.ndim == 3:
        probe = probe[0]
    frames = mapping.frames(_fill_masked(np.asarray(data.frames), data.meta))
    probe_net = None if probe is None else mapping.probe_to_network(probe)
    flux = _flux(frames, probe_net, noise, opts.flux)
    if not opts.flux and probe is not None:
        flux *= power / max(float(np.sum(np.abs(probe) ** 2)), 1e-30)  # a mixed state's modes
        # a stored probe in other units (unit power, max 1) saturates the network silently
        seen = float(np.median(frames.numpy().reshape(len(frames), -1).sum(1)))
        if not 0.2 <= seen / max(flux, 1e-30) <= 3.0:
            warnings.warn(f"learned engine: the probe's power ({flux:.4g} photons) does not "
                          f"match the frames' ({seen:.4g} per frame): the probe is in other "
                          "units; using the frames' flux", stacklevel=2)  # fmt: skip
            flux = _flux(frames, None, noise, None)
    trained = zone_plate(geo, flux)
    if probe is None:
        probe_net, probe = trained, mapping.probe_to_data(trained)
    match = probe_match(probe_net, trained)
    footprint = footprint_ratio(probe_net, trained)
    if match < 0.95 or not 0.85 <= footprint <= 1.15:
        warnings.warn(f"learned engine: the probe differs from the one the network was "
                      f"trained with (far-field match {match:.2f}, want >= 0.95; footprint "
                      f"{footprint:.2f}x the training probe's, want 0.85-1.15): the output is "
                      "not to be trusted; train weights for this probe (`ptyflow "
                      "train-learned`, docs/learned.md)", stacklevel=2)  # fmt: skip
    threads = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    try:
        t1 = time.perf_counter()
        amp, phase = [], []
        dev = next(net.parameters()).device
        cast = _autocast_dtype(opts.precision, dev)
        if cast is not None and model is None:  # our own copy: no per-call weight casts
            _store_weights_as(net, cast)
        with torch.inference_mode(), torch.autocast(dev.type, cast, enabled=cast is not None):
            for s in range(0, data.n_frames, int(opts.batch_size)):
                x = normalize_frames(frames[s:s + opts.batch_size], flux).to(dev)
                a, p = net(x.contiguous(memory_format=torch.channels_last))
                amp.append(a.float().cpu())
                phase.append(p.float().cpu())
        patches = torch.polar(torch.cat(amp), torch.cat(phase))
        t_pred = time.perf_counter() - t1
        # on the data's pixels: network pixel j at data pixel s j (identity when N == n)
        patches, start = mapping.patches_to_data(patches, geo.crop)
        side = patches.shape[-1]
        crop = slice(start, start + side)
        corners = np.rint(np.asarray(data.positions_px, np.float64)) + start
        weight = torch.as_tensor(np.abs(probe[crop, crop]) ** 2)
        align = opts.align_phase
        if align is None:
            align = not noise.single_material
        obj, den = stitch_patches(patches, corners, weight, tuple(data.object_shape),
                                  align_phase=align,
                                  iterations=opts.align_iterations)  # fmt: skip
        # judged with the training probe: the network assumes its footprint, whatever the prior
        covered = _patch_coverage(den, mapping.probe_to_data(zone_plate(geo, 1.0)),
                                  data.positions_px, tuple(data.object_shape))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    total = time.perf_counter() - t0
    if callback is not None:
        callback(0, {"time": total, "elapsed": total})
    return ReconstructionResult(
        object=obj, probe=probe.astype(np.complex64),
        positions_px=np.asarray(data.positions_px, np.float64).copy(),
        timings={"total": total, "predict": t_pred, "stitch": total - t_pred - (t1 - t0)},
        engine="learned", options=asdict(opts),
        extras={"flux": flux, "network": net.config.model, "autocast": str(cast),
                "patch_coverage": covered, "weights": source, "probe_match": match,
                "frame_mapping": {"mode": mapping.mode, "data_size": mapping.data_size,
                                  "net_size": mapping.net_size, "scale": mapping.scale}},
    )  # fmt: skip
