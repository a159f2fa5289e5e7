"""Blind probe estimates from the measured frames, and a probe health check.

A far-field probe started as the back-propagated root-mean frame with a *flat* phase is a
centrosymmetric spot a few pixels wide, whatever the real beam: a defocused zone plate or
convergent electron probe illuminates a disc of ``D`` pixels, and the flat-phase start
gives its diffraction-limited focus instead (and, back-propagated with ``ifft2c``, whose
real-space origin is pixel ``(0, 0)``, sits split over the window's four corners). PIE then
shrinks the probe further and the reconstruction collapses to dots. The estimate here uses
what the frames say, and lets the data decide what they do not:

* the **aperture**: the bright-field disc, the support of the mean diffraction pattern, with
  ``sqrt(mean)`` as its amplitude;
* the **defocus**: a Fresnel (quadratic) phase ``s pi a rho^2`` over the aperture (``rho``
  in detector pixels from the disc's centre). It moves the ray at ``rho`` to ``N a rho``
  object pixels from the axis, so the disc edge ``rho = r_a`` lands at ``D / 2`` for
  ``a = D / (2 N r_a)``. Neither the footprint ``D`` nor the sign ``s`` (sample before or
  after the focus) is in the mean pattern: candidates ``D`` = 0.15-0.74 ``N`` of either sign
  are each refined for a few rPIE epochs on half of a compact set of frames, and the one
  that best **predicts the other half** wins. A too-small probe fits its own frames well
  (fewer overlap constraints) but cannot predict its neighbours', so held-out frames, not
  the fit, choose;
* the **power**: the mean counts per frame.
"""

from __future__ import annotations

import numpy as np

#: Candidate footprint diameters, as fractions of the frame side (steps of ~1.3x).
FOOTPRINT_FRACTIONS = (0.15, 0.2, 0.26, 0.34, 0.44, 0.57, 0.74)
#: Frames of the trial set (the ones nearest the scan's centroid) and its rPIE epochs.
TRIAL_FRAMES, TRIAL_EPOCHS = 48, 5


#: Bytes of frames a lazy store is read in (one ~16 MiB raw shard: memory stays flat
#: whatever the number of frames).
BLOCK_BYTES = 16 * 2**20


def mean_pattern(frames, *, clip: bool = True) -> np.ndarray:
    """Mean frame (counts, float64), read a block at a time for lazy frame stores.

    ``clip``: negative counts (background-subtracted detectors) count as 0, as a probe
    amplitude ``sqrt(mean)`` needs; ``False`` keeps them (a plain mean).
    """
    if not hasattr(frames, "iter_blocks"):
        a = np.asarray(frames)
        return (np.clip(a, 0, None) if clip else a).mean(0, dtype=np.float64)
    total, n = None, 0
    for _, b in frames.iter_blocks(BLOCK_BYTES):
        if clip:
            if not b.flags.writeable:
                b = b.copy()
            np.maximum(b, 0, out=b)  # in place: no second copy of the block
        s = np.sum(b, axis=0, dtype=np.float64)
        total = s if total is None else total + s
        n += len(b)
        del b  # before the next read: one block in memory, not two
    return total / max(n, 1)


def aperture_support(mean: np.ndarray, level: float = 0.1) -> np.ndarray:
    """Bright-field support: pixels above ``level`` of the (3x3-smoothed) mean pattern's peak,
    with holes inside the outline filled (a zone plate's central stop is kept as measured
    in the amplitude, not in the support)."""
    from scipy.ndimage import binary_fill_holes, uniform_filter

    sm = uniform_filter(mean, 3)
    return binary_fill_holes(sm >= level * sm.max())


def farfield_probe(mean: np.ndarray, diameter_px: float, sign: float = 1.0) -> np.ndarray:
    """``sqrt(mean) * support * exp(sign i pi a rho^2)`` on the detector, in the object plane.

    Parameters
    ----------
    mean : (N, N) mean frame, counts; detector centred at ``N // 2``
    diameter_px : float
        Footprint diameter the defocus gives, object pixels.
    sign : {+1, -1}
        Sign of the Fresnel phase (which side of the focus the sample is).

    Returns
    -------
    complex128 ``(N, N)`` object-plane probe centred at ``(N // 2, N // 2)`` carrying the mean
    counts per frame (``fft2c`` of it is the detector wave: its real-space origin is pixel
    ``(0, 0)``, so the inverse transform is rolled by half a window).
    """
    ny, nx = mean.shape
    support = aperture_support(mean)
    yy, xx = np.indices(mean.shape)
    cy, cx = np.average(yy, weights=support), np.average(xx, weights=support)
    r_a = max(np.sqrt(support.sum() / np.pi), 1.0)
    a = float(diameter_px) / (2.0 * min(ny, nx) * r_a)
    wave = np.sqrt(mean) * support * np.exp(1j * np.sign(sign) * np.pi * a * ((yy - cy) ** 2
                                                                           + (xx - cx) ** 2))
    wave *= np.sqrt(mean.sum() / max(float(np.sum(np.abs(wave) ** 2)), 1e-30))
    probe = np.fft.ifft2(np.fft.ifftshift(wave), norm="ortho")
    return np.roll(probe, (ny // 2, nx // 2), axis=(0, 1))


def trial_set(data, n_frames: int = TRIAL_FRAMES):
    """The ``n_frames`` frames nearest the scan's centroid, in memory, on a cropped canvas.

    Returns a :class:`~ptytasks.data.PtychoData` whose positions are relative to the crop
    (only these frames are read: a lazy frame store stays bounded).
    """
    pos = np.asarray(data.positions_px, np.float64)
    order = np.sort(np.argsort(np.hypot(*(pos - pos.mean(0)).T), kind="stable")[:n_frames])
    sub = data.subset(order)
    f = sub.frames
    if hasattr(f, "iter_blocks"):
        f = np.concatenate([b for _, b in f.iter_blocks()], axis=0)
    sub.frames = np.asarray(f, np.float32)
    lo = np.floor(sub.positions_px.min(0)).astype(int)
    sub.positions_px = sub.positions_px - lo
    span = np.ceil(sub.positions_px.max(0)).astype(int) + np.array(data.frame_shape) + 1
    sub.object_shape = (int(span[0]), int(span[1]))
    sub.probe, sub.ground_truth = None, None
    return sub


def held_out_error(trial, probe, *, epochs: int = TRIAL_EPOCHS, seed: int = 0) -> tuple:
    """Refine ``probe`` with rPIE on the even frames of ``trial``, predict the odd ones.

    Returns ``(error, fit_error)``: the normalised amplitude error of the odd frames under
    the refined object and probe (one batch: every prediction is made before any update),
    and the even frames' own error after the fit.
    """
    from ptytasks.engines.options import PIEOptions
    from ptytasks.engines.pie import reconstruct_pie

    n = len(trial.frames)
    fit, test = trial.subset(np.arange(0, n, 2)), trial.subset(np.arange(1, n, 2))
    r = reconstruct_pie(fit, PIEOptions(iterations=epochs, seed=seed), probe_init=probe)
    pred = reconstruct_pie(test, PIEOptions(iterations=1, batch_size=len(test.frames),
                                            update_probe=False, rescale_probe=False,
                                            shuffle=False),
                           object_init=r.object, probe_init=r.probe)  # fmt: skip
    return float(pred.loss_history[0]), float(r.loss_history[-1])


def blind_farfield_probe(data, *, fractions=FOOTPRINT_FRACTIONS, trial_frames: int = TRIAL_FRAMES,
                         epochs: int = TRIAL_EPOCHS) -> tuple[np.ndarray, dict]:
    """The far-field probe a careful user would start from when the file has none.

    Parameters
    ----------
    data : PtychoData (far field; frames in memory or lazy)
    fractions : candidate footprint diameters, fractions of the frame side
    trial_frames, epochs : size of the trial set and rPIE epochs per candidate

    Returns
    -------
    probe : complex64 ``(N, N)``, centred, carrying the mean counts per frame
    report : dict with the chosen ``diameter_px``, ``sign`` and every candidate's scores
    """
    mean = mean_pattern(data.frames)
    n = min(mean.shape)
    trial = trial_set(data, trial_frames)
    scores = []
    for sign in (1.0, -1.0):
        for f in fractions:
            p = farfield_probe(mean, f * n, sign)
            if len(trial.frames) >= 4:
                held, fit = held_out_error(trial, p, epochs=epochs)
            else:  # too few frames to hold any out: the fit alone
                held = fit = float("nan")
            scores.append({"diameter_px": f * n, "sign": sign, "held_out_error": held,
                           "fit_error": fit})  # fmt: skip
    finite = [s for s in scores if np.isfinite(s["held_out_error"])]
    best = (min(finite, key=lambda s: s["held_out_error"]) if finite
            else {"diameter_px": 0.35 * n, "sign": 1.0})  # fmt: skip
    probe = farfield_probe(mean, best["diameter_px"], best["sign"]).astype(np.complex64)
    return probe, {"diameter_px": best["diameter_px"], "sign": best["sign"],
                   "candidates": scores}  # fmt: skip



#: Near field: trial frames, and the phase-only ePIE epochs (at least, at most) with the
#: plateau patience that ends them once the trap is left.
NF_TRIAL_FRAMES, NF_MIN_EPOCHS, NF_MAX_EPOCHS, NF_PATIENCE = 32, 60, 300, 25


def blind_nearfield_probe(data, *, trial_frames: int = NF_TRIAL_FRAMES,
                          max_epochs: int = NF_MAX_EPOCHS, seed: int = 0) -> tuple:
    """The near-field probe a careful user would start from when the file has none.

    From the usual start (the root-mean frame back-propagated with a flat phase) PIE stalls
    in a trap -- loss ~0.03 where ~1e-5 is reachable, the probe barely moving (error ~0.9
    against the simulator's diffuser probe): the object's *amplitude* absorbs the speckle
    the probe lacks. Holding the object to ``|O| = 1`` (a weakly absorbing sample, as
    hard-X-ray near-field holography assumes) closes that route: only the probe can explain
    the intensity structure, and ePIE leaves the trap within ~30-100 epochs. The probe
    found so (error ~0.04) starts the unconstrained engines, which then fit the amplitude.

    Steps: ``sqrt(mean frame)`` with flat phase propagated back to the sample, scaled to the
    mean counts per frame; then ePIE (steps 1, 1; sequential; sub-pixel shifts) on the
    ``trial_frames`` frames nearest the scan centroid, the object projected onto ``|O| = 1``
    after every frame update, for ``NF_MIN_EPOCHS``..``max_epochs`` epochs, stopped on a
    plateau (no 1 % gain in ``NF_PATIENCE`` epochs) once the loss is below a tenth of the
    first epoch's.

    Returns
    -------
    probe : complex64 ``(wy, wx)``
    report : dict with ``epochs``, ``loss_first``, ``loss_final``, ``escaped`` (loss fell
        below a tenth of the first epoch's) and ``loss_history``
    """
    import torch

    from ptytasks.engines.pie import model_from_data
    from ptytasks.engines.pie_state import PIEState

    trial = trial_set(data, trial_frames)
    model = model_from_data(trial)
    amp = torch.sqrt(torch.as_tensor(np.clip(trial.frames, 0, None)))
    total, n = float((amp**2).sum()), len(trial.frames)
    idx0 = torch.zeros(1, dtype=torch.long)
    mean = torch.as_tensor(np.sqrt(mean_pattern(data.frames))).to(torch.complex64)
    with torch.no_grad():
        probe = model.from_detector(mean[None], idx0).to(torch.complex64).clone()
    probe *= (total / n / float((probe.abs() ** 2).sum())) ** 0.5
    obj = torch.ones(trial.object_shape, dtype=torch.complex64)
    pos = model.positions.detach().clone().to(torch.float64)
    sqrt_f = model.intensity_factors.detach().to(torch.float32).sqrt()
    st = PIEState(obj, probe, pos, model, amp, sqrt_f, alpha=1.0, beta=1.0, variant="epie")
    gen = torch.Generator().manual_seed(int(seed))
    losses, best, since = [], np.inf, 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # sequential small updates: extra threads only spin
    try:
        with torch.no_grad():
            for ep in range(max_epochs):
                err = 0.0
                for i in torch.randperm(n, generator=gen).split(1):
                    err += float(st.step(i, True))
                    st.obj.copy_(torch.polar(torch.ones_like(st.obj.real), st.obj.angle()))
                losses.append(err / total)
                best, since = (losses[-1], 0) if losses[-1] < 0.99 * best else (best, since + 1)
                if (ep + 1 >= NF_MIN_EPOCHS and since >= NF_PATIENCE
                        and losses[-1] < 0.1 * losses[0]):  # fmt: skip
                    break
    finally:
        torch.set_num_threads(threads)
    return st.probe[0].numpy().astype(np.complex64), {
        "epochs": len(losses), "loss_first": losses[0], "loss_final": losses[-1],
        "escaped": losses[-1] < 0.1 * losses[0], "loss_history": losses}  # fmt: skip


def probe_health(probe: np.ndarray, *, min_pixels: float = 12.0) -> dict:
    """Illuminated area of a probe: ``participation`` = ``(sum I)^2 / sum I^2`` (pixels).

    A probe whose power sits in fewer than ``min_pixels`` pixels (``collapsed``) cannot
    overlap between neighbouring scan positions: the reconstruction degenerates to dots.
    """
    i = np.abs(np.asarray(probe)) ** 2
    if i.ndim == 3:  # modes: their summed intensity
        i = i.sum(0)
    s2 = float(np.sum(i**2))
    part = float(np.sum(i) ** 2 / s2) if s2 > 0 else 0.0
    return {"participation_px": part, "collapsed": part < min_pixels}


class ProbeCollapsed(RuntimeError):
    """The probe's power sits in a few pixels: the reconstruction would be dots."""


def check_probe(probe, *, epoch: int | None = None, min_pixels: float | None = None) -> None:
    """Raise :class:`ProbeCollapsed` when ``probe`` (array or tensor, one or more modes)
    has collapsed (:func:`probe_health`); ``epoch`` names when, for the message.

    ``min_pixels`` defaults to 12, or ``N^2 / 64`` for windows smaller than 28 x 28 (the
    collapse seen on the default 64 x 64 far-field simulation: 3-6 pixels; a healthy
    probe there has ~400).
    """
    if hasattr(probe, "detach"):
        probe = probe.detach().cpu().numpy()
    if min_pixels is None:
        min_pixels = min(12.0, probe.shape[-1] * probe.shape[-2] / 64.0)
    h = probe_health(probe, min_pixels=min_pixels)
    if h["collapsed"]:
        when = f"after epoch {epoch + 1}" if epoch is not None else "at the end"
        raise ProbeCollapsed(
            f"the probe collapsed {when}: its power sits in {h['participation_px']:.1f} "
            f"pixels (fewer than {min_pixels:g}), so neighbouring scan positions no longer "
            "overlap and the object would come out as dots. Start from a better probe: a "
            "probe in the file, calibration.probe 'physical' with the beam parameters, or "
            "check the detector centring and geometry (pixel size, distance, energy)."
        )
