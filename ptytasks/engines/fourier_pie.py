"""Fourier-ptychographic PIE with embedded pupil recovery (EPRY).

Fourier ptychography is ptychography in the spectrum (Zheng, Horstmeyer & Yang 2013): LED
``i`` sees the window ``Phi_i = S[c_i + r]`` of the high-resolution spectrum
``S = fft2c(O)``, filtered by the pupil ``P``, and records ``|scale * ifft2c(P Phi_i)|^2``
(:class:`~ptytasks.physics.models.fourier.FourierPtychography`). So the PIE update applies
with object -> spectrum, probe -> pupil and scan positions -> window corners; the pupil
update is EPRY (Ou, Zheng & Yang 2014, Opt. Express 22, 4960). LEDs are visited from low to
high illumination NA: the bright-field images fix the low frequencies (and the pupil) first,
the dark-field images then extend the spectrum outwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.engines.cpu_heap import keep_heap
from ptytasks.engines.options import FourierPIEOptions
from ptytasks.engines.pie import cpu_threads
from ptytasks.engines.pie_state import PIEState, as_detector_mask, detector_mask_of, diverged
from ptytasks.engines.result import ReconstructionResult
from ptytasks.modalities import modality_of, model_for
from ptytasks.physics.fft import fft2c, ifft2c
from ptytasks.probe_estimate import fill_unused

Callback = Callable[[int, dict], object]


class _FreePupil:
    """The FP model's detector maps with the pupil left to the engine.

    ``to_detector`` with ``pupil=1`` is ``scale * ifft2c``; ``from_detector`` is its inverse,
    so the PIE step sees a unitary-like pair and handles the pupil as its "probe".
    """

    def __init__(self, model):
        self.model = model

    def to_detector(self, psi, idx):
        return self.model.to_detector(psi, idx, pupil=1.0)

    def from_detector(self, wave, idx):
        return self.model.from_detector(wave, idx)


def led_order(wavevectors: torch.Tensor, how: str, generator: torch.Generator) -> torch.Tensor:
    """Frame order within an epoch: by illumination NA (stable), data order, or random."""
    n = wavevectors.shape[0]
    if how == "na":
        return torch.argsort(wavevectors.double().norm(dim=1), stable=True)
    if how == "data":
        return torch.arange(n)
    if how == "random":
        return torch.randperm(n, generator=generator)
    raise ValueError(f"order must be 'na', 'data' or 'random'; got {how!r}")


def reconstruct_fourier_pie(
    data: PtychoData,
    options: FourierPIEOptions | None = None,
    *,
    object_prior=None,
    pupil_prior=None,
    model=None,
    callback: Callback | None = None,
    detector_mask=None,
) -> ReconstructionResult:
    """Reconstruct the high-resolution object and the pupil from FP data.

    Parameters
    ----------
    data : PtychoData
        ``modality="fourier"``: low-resolution ``frames`` ``(n, my, mx)``, ``wavevectors``,
        ``object_shape`` (high resolution), ``pixel_size`` (high-resolution pitch),
        ``wavelength``, ``distance`` (defocus), ``params["na"]``.
    options : FourierPIEOptions, optional
    object_prior : complex array ``object_shape``, optional
        Initial high-resolution object; default: the lowest-NA image's amplitude,
        upsampled by zero-padding its spectrum.
    pupil_prior : complex array ``(my, mx)``, optional
        Initial pupil (centred); default the model's (NA disc with the defocus phase).
    model : FourierPtychography, optional
        Default built from ``data``; its intensity factors and wavevectors are used.
    callback : callable, optional
        ``callback(epoch, info)`` after every epoch (``loss``, ``time``, ``elapsed``, live
        ``spectrum`` and ``pupil`` tensors, ``object``: a callable giving the current image).
    detector_mask : bool array ``(my, mx)``, optional
        Camera pixels to enforce (True); the others keep the model's amplitude. Default:
        the data's own (:func:`~ptytasks.engines.pie_state.detector_mask_of`: the file's
        bad pixels, a tile's guard band, :attr:`ptytasks.tiling.Tile.guard`); all pixels
        where it has none.

    Returns
    -------
    ReconstructionResult
        ``object`` (real space, high resolution), ``pupil``, ``wavevectors``,
        ``loss_history`` (normalised amplitude error per epoch), ``timings``.
    """
    opts = options or FourierPIEOptions()
    t_start = time.perf_counter()
    device = torch.device(opts.device)
    keep_heap(device)  # CPU: reuse freed buffers across frames (ptytasks/engines/cpu_heap.py)
    cdtype = torch.complex128 if opts.dtype == "complex128" else torch.complex64
    rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
    if not modality_of(data).has_pupil:
        raise ValueError(f"Fourier PIE needs Fourier-ptychography data; got {data.modality!r}")
    model = (model or model_for(data)).to(device)
    window = data.frame_shape

    amp = torch.sqrt(torch.as_tensor(np.clip(data.frames, 0, None), dtype=rdtype, device=device))
    mask = as_detector_mask(detector_mask_of(data.meta) if detector_mask is None
                            else detector_mask, window, device)  # fmt: skip
    total_counts = float((amp**2).sum() if mask is None else (amp**2 * mask).sum())
    with torch.no_grad():
        corners = model.spectrum_positions.detach().to(device=device, dtype=torch.float64)
        aperture = model.aperture.detach().to(device=device, dtype=rdtype)
        pupil = model.pupil_function().detach() if pupil_prior is None else \
            torch.as_tensor(np.asarray(pupil_prior))
    pupil = pupil.to(device=device, dtype=cdtype).clone()[None]
    ny, nx = data.object_shape
    hi = torch.tensor([ny - window[0], nx - window[1]], dtype=corners.dtype, device=device)
    if bool((corners < 0).any()) or bool((corners > hi).any()):
        raise ValueError(
            f"some LEDs' spectrum windows ({window}) fall outside the {data.object_shape} "
            f"spectrum (corners {corners.min(0).values.tolist()} .. "
            f"{corners.max(0).values.tolist()}): increase the upsampling or drop those LEDs"
        )
    factors = model.intensity_factors.detach().to(device=device, dtype=rdtype)

    gen = torch.Generator().manual_seed(int(opts.seed))
    k = model.wavevectors.detach().cpu()
    if object_prior is not None:
        spec = fft2c(torch.as_tensor(np.asarray(object_prior), device=device).to(cdtype))
    else:
        spec = _spectrum_from_image(amp, k, factors, model.scale, data.object_shape, cdtype,
                                    None if mask is None else mask.cpu().numpy())
    alpha, beta = opts.steps()
    state = PIEState(spec, pupil, corners, _FreePupil(model), amp, factors.sqrt(), alpha=alpha,
                     beta=beta, variant=opts.variant, subpixel=opts.subpixel, eps=opts.eps,
                     probe_support=aperture if opts.pupil_support else None, spectrum=True,
                     detector_mask=mask)
    losses: list[float] = []
    epoch_times: list[float] = []
    with torch.no_grad(), cpu_threads(device, opts.cpu_threads, window[0] * window[1]):
        for epoch in range(opts.iterations):
            t0 = time.perf_counter()
            order = led_order(k, opts.order, gen).to(device)
            upd_p = opts.update_pupil and epoch >= opts.pupil_update_start
            err = 0.0
            for i in order.split(1):
                err += state.step(i, upd_p)
            losses.append(err / max(total_counts, 1e-30))
            epoch_times.append(time.perf_counter() - t0)
            if diverged(err, epoch, f"Fourier {opts.variant}", alpha=alpha, beta=beta):
                break
            if callback is not None:
                callback(epoch, {
                    "epoch": epoch, "loss": losses[-1], "time": epoch_times[-1],
                    "elapsed": time.perf_counter() - t_start, "spectrum": state.obj,
                    "pupil": state.probe[0],
                    # the image is one inverse FFT away; computed only when asked
                    "object": lambda: ifft2c(state.obj),
                })
    params = {n: float(v) for n, v in model.physical_parameters().items() if v.numel() == 1}
    return ReconstructionResult(
        object=ifft2c(state.obj).cpu().numpy(),
        pupil=state.probe[0].cpu().numpy(),
        wavevectors=k.double().numpy(),
        params=params,
        loss_history=losses,
        timings={"total": time.perf_counter() - t_start,
                 "per_epoch": float(np.mean(epoch_times)) if epoch_times else 0.0},
        engine="fourier_pie",
        options=opts.to_dict(),
    )


def _spectrum_from_image(amp, k, factors, scale, shape, cdtype, use=None) -> torch.Tensor:
    """Initial spectrum: the lowest-NA image's amplitude, upsampled by zero-padding.

    With the model's ``scale = sqrt(my mx / (My Mx))``, a window ``fft2c(a) / scale`` at the
    spectrum centre images back to ``a``; zero elsewhere is the band-limited upsampling.
    ``use``: the camera's usable pixels (bool); the others, which no LED image corrects
    later, are filled from their usable neighbours.
    """
    i0 = int(torch.argmin(k.double().norm(dim=1)))
    a = amp[i0] / factors[i0].sqrt()
    if use is not None:
        filled = fill_unused(a.double().cpu().numpy() ** 2, use) ** 0.5
        a = torch.as_tensor(filled, device=amp.device)
    a = a.to(cdtype)
    my, mx = a.shape
    ny, nx = shape
    spec = torch.zeros(shape, dtype=cdtype, device=amp.device)
    y0, x0 = ny // 2 - my // 2, nx // 2 - mx // 2
    spec[y0:y0 + my, x0:x0 + mx] = fft2c(a) / scale
    return spec
