"""Blind probe estimates that run PIE on a trial set (the theory and the numpy pieces are
in :mod:`ptytasks.probe_estimate`): the far-field footprint and defocus chosen by
held-out frames (at low counts: by the trial's own fit with the candidate held), and the
near-field probe from a phase-only-object ePIE.

:func:`ptytasks.engines.pie.initial_probe` calls them for a file without a probe and
passes its own ``reconstruct_pie``, so this module does not import the engine that uses it.
"""

from __future__ import annotations

import numpy as np
import torch

from ptytasks.engines.losses import COUNTS_MAX, data_loss
from ptytasks.engines.options import PIEOptions
from ptytasks.engines.pie_state import PIEState, as_detector_mask, detector_mask_of
from ptytasks.modalities import model_for
from ptytasks.physics.fft import gaussian_blur
from ptytasks.probe_estimate import (
    FOOTPRINT_FRACTIONS,
    TRIAL_EPOCHS,
    TRIAL_FRAMES,
    aperture_support,
    area_radius,
    farfield_probe,
    mean_pattern,
    trial_set,
)


def held_out_error(trial, probe, reconstruct, *, epochs: int = TRIAL_EPOCHS,
                   seed: int = 0) -> float:
    """Refine ``probe`` with rPIE on the even frames of ``trial``, predict the odd ones.

    ``reconstruct`` is :func:`ptytasks.engines.pie.reconstruct_pie` (passed in: the PIE
    engine calls these estimators for its own start).

    Returns the normalised amplitude error of the odd frames under the refined object and
    probe (one batch: every prediction is made before any update).
    """
    n = len(trial.frames)
    fit, test = trial.subset(np.arange(0, n, 2)), trial.subset(np.arange(1, n, 2))
    r = reconstruct(fit, PIEOptions(iterations=epochs, seed=seed), probe_prior=probe)
    pred = reconstruct(test, PIEOptions(iterations=1, batch_size=len(test.frames),
                                            update_probe=False, rescale_probe=False,
                                            shuffle=False),
                           object_prior=r.object, probe_prior=r.probe)  # fmt: skip
    return float(pred.loss_history[0])


#: rPIE iterations of the low-count score (:func:`trial_deviance`), the candidate held.
FIT_ITERATIONS = 10
#: The best candidate's diameter is refined on the grid ``d * REFINE_RATIO**j``,
#: ``|j| <= REFINE_STEPS`` (half a candidate step either side), by the same score: the
#: candidates step by ~1.3x, while the probe's error moves by ~0.1 per 3 % of diameter (the
#: far-field probe's defocus). Below ``COUNTS_MAX`` since hypothesis 42, at every count
#: since hypothesis 45 (``bench/results/records/blind-farfield-refine-h42-*.json``,
#: ``blind-farfield-refine-h45-*.json``).
REFINE_RATIO, REFINE_STEPS = 1.3 ** (1 / 8), 4


def coarse_fractions(fractions, n_frames: int, trial_frames: int = TRIAL_FRAMES) -> tuple:
    """The coarse candidate footprints: ``fractions``, and where the trial set is full
    (``n_frames >= trial_frames``) their geometric midpoints too (every ``fractions`` value
    kept, so a pick changes only where a midpoint scores lower).

    Why: with many overlapping trial frames the low-count score's basin at the right
    footprint is narrower than the ~1.3x steps, and a scan of 50 or 100 frames at ~2 counts
    per pixel can step over it and fall to the smallest footprint (fresh cases: two of six
    ff-50-1e4 starts collapsed, none with the midpoints; no start of 30 worse by more than
    0.015). On 15- and 25-frame trials the finer steps found wrong basins, so they keep the
    1.3x steps (hypotheses 52-53 in ``docs/rnf.md``; the record:
    ``bench/results/records/blind-farfield-dense-midpoints-h52-h53-cfbab31.json``).
    """
    f = sorted(float(v) for v in fractions)
    if n_frames < trial_frames:
        return tuple(f)
    mids = {float(np.sqrt(a * b)) for a, b in zip(f[:-1], f[1:], strict=True)}
    return tuple(sorted(set(f) | mids))


def trial_deviance(trial, probe, reconstruct, *, iterations: int = FIT_ITERATIONS,
                   seed: int = 0) -> float:
    """How well ``probe`` lets one object explain every frame of ``trial``: the mean Poisson
    deviance per (used) detector pixel after ``iterations`` of rPIE with the probe held.

    The low-count score of :func:`blind_farfield_probe`. At a few counts per pixel the
    held-out amplitude error of :func:`held_out_error` rewards the candidate whose
    predictions are closest to the mean pattern -- the smallest footprint -- because every
    object fitted to so few photons predicts unseen frames badly; with the probe held, a
    wrong defocus cannot make overlapping frames agree, and the deviance is the proper
    score for counts. At high counts the held-out error stays (there a small probe fits
    its own frames: measured, ``docs/rnf.md`` hypothesis 37).
    """
    r = reconstruct(trial, PIEOptions(variant="rpie", iterations=iterations,
                                      update_probe=False, seed=seed), probe_prior=probe)
    with torch.no_grad():
        pred = model_for(trial)(torch.as_tensor(np.asarray(r.object)),
                                torch.as_tensor(np.asarray(r.probe)),
                                torch.arange(len(trial.frames)))
    meas = torch.as_tensor(np.clip(np.asarray(trial.frames, np.float64), 0, None))
    use = as_detector_mask(detector_mask_of(trial.meta), trial.frame_shape, "cpu")
    return float(data_loss("poisson", "intensity")(pred.double(), meas, use))


def blind_farfield_probe(data, reconstruct, *, fractions=FOOTPRINT_FRACTIONS,
                         trial_frames: int = TRIAL_FRAMES,
                         epochs: int = TRIAL_EPOCHS) -> tuple[np.ndarray, dict]:
    """The far-field probe a careful user would start from when the file has none.

    Parameters
    ----------
    data : PtychoData (far field; frames in memory or lazy)
    reconstruct : :func:`ptytasks.engines.pie.reconstruct_pie`
    fractions : candidate footprint diameters, fractions of the frame side (with their
        midpoints where the trial set is full: :func:`coarse_fractions`)
    trial_frames, epochs : size of the trial set and rPIE epochs per candidate

    Returns
    -------
    probe : complex64 ``(N, N)``, centred, carrying the mean counts per frame
    report : dict with the chosen ``diameter_px``, ``sign``, ``scored_by`` (``"held_out"``
        or, below :data:`COUNTS_MAX` mean counts per pixel, ``"trial_deviance"``), the
        ``mean_counts`` that decided it, ``at_smallest_footprint`` (the pick lies at or
        below the smallest candidate: the score did not turn), ``focus_px`` (the bright
        field's diffraction-limited spot, object pixels), ``suspect`` (at the smallest
        footprint while that candidate is still defocused beyond ``focus_px``: the start is
        probably wrong) and every candidate's ``score`` (the refinement's marked
        ``refine``: ``j``)
    """
    use = detector_mask_of(data.meta)
    mean = mean_pattern(data.frames, use=use)
    n = min(mean.shape)
    counts = float(mean[use].mean() if use is not None else mean.mean())
    trial = trial_set(data, trial_frames)
    low = counts < COUNTS_MAX  # read at call time: the calibration key hashes it
    scored_by = "trial_deviance" if low else "held_out"

    def score(p) -> float:
        if low:
            return trial_deviance(trial, p, reconstruct, iterations=FIT_ITERATIONS)
        if len(trial.frames) >= 4:
            return held_out_error(trial, p, reconstruct, epochs=epochs)
        return float("nan")  # too few frames to hold any out

    scores = []
    candidates = coarse_fractions(fractions, data.n_frames, trial_frames)
    for sign in (1.0, -1.0):
        for f in candidates:
            scores.append({"diameter_px": f * n, "sign": sign,
                           "score": score(farfield_probe(mean, f * n, sign))})
    finite = [s for s in scores if np.isfinite(s["score"])]
    best = (min(finite, key=lambda s: s["score"]) if finite
            else {"diameter_px": 0.35 * n, "sign": 1.0})  # fmt: skip
    if finite:
        # the candidates step by ~1.3x, the probe's error by ~0.1 per 3 % of diameter
        coarse = best
        for j in range(-REFINE_STEPS, REFINE_STEPS + 1):
            if j == 0:
                continue
            d = coarse["diameter_px"] * REFINE_RATIO ** j
            scores.append({"diameter_px": d, "sign": coarse["sign"], "refine": j,
                           "score": score(farfield_probe(mean, d, coarse["sign"]))})
            if np.isfinite(scores[-1]["score"]) and scores[-1]["score"] < best["score"]:
                best = scores[-1]
    probe = farfield_probe(mean, best["diameter_px"], best["sign"]).astype(np.complex64)
    # a pick at or below the smallest candidate: the score kept falling toward a footprint
    # with no overlap (at a few counts per pixel in dense scans, the wrong one: probe error
    # 0.98-1.00 on ff-100-1e4 cases, records/blind-farfield-lowcount-collapse-info-*.json)
    smallest = best["diameter_px"] <= min(fractions) * n * (1 + 1e-9)
    # ... unless the smallest candidate is already in focus: its defocus cone no wider than
    # the bright field's diffraction-limited spot, ~N / r_a object pixels (r_a: the support's
    # area radius, detector pixels). Then no smaller footprint exists to fall to and the beam
    # is focused on the sample (a flat-phase Gaussian beam: the flag fired at probe errors
    # of 0.16-0.18, records/blind-farfield-focus-flag-info-*.json); a zone plate's or an electron
    # probe's bright field (r_a 17-27 px in 64) puts it at 2.4-3.8 px, under the 9.6 px candidate.
    focus_px = n / area_radius(aperture_support(mean))
    suspect = smallest and min(fractions) * n > focus_px
    return probe, {"diameter_px": best["diameter_px"], "sign": best["sign"],
                   "scored_by": scored_by, "mean_counts": counts,
                   "at_smallest_footprint": bool(smallest), "focus_px": focus_px,
                   "suspect": bool(suspect), "candidates": scores}  # fmt: skip



#: Near field: trial frames, and the phase-only ePIE epochs (at least, at most) with the
#: plateau patience that ends them. The trap is left slowly on low-contrast objects
#: (epochs 300-600 on two of ten tuning objects at 1e6 photons per frame, after a slow
#: drift of a few % per 100 epochs), so the cap is 1000 and a plateau is no 1 % gain in
#: 100 epochs (hypothesis 27, ``bench/results/records/blind-nearfield-h27-*.json``).
NF_TRIAL_FRAMES, NF_MIN_EPOCHS, NF_MAX_EPOCHS, NF_PATIENCE = 32, 60, 1000, 100
#: For the first ``NF_LOWPASS_EPOCHS`` epochs the object's phase is held smooth (a complex
#: Gaussian blur of ``NF_LOWPASS_SIGMA`` px after each epoch, then ``|O| = 1``), so it
#: cannot absorb the probe's fine speckle: trapped tuning trials left the trap so
#: (hypothesis 28, ``bench/results/records/blind-nearfield-h28-*.json``).
NF_LOWPASS_SIGMA, NF_LOWPASS_EPOCHS = 1.0, 150
#: The trial counts as escaped when its last loss is below this fraction of the first
#: epoch's (escaped tuning trials end at 0.09-0.28 of it, trapped ones at 0.40-0.61).
NF_ESCAPE_RATIO = 1.0 / 3.0


def settings() -> dict:
    """The blind estimators' constants, hashed into the pipeline's calibration key: a store
    must not serve a probe estimated under other constants (``flows.stages``)."""
    return {"far": {"fractions": list(FOOTPRINT_FRACTIONS), "trial_frames": TRIAL_FRAMES,
                    "trial_epochs": TRIAL_EPOCHS, "low_counts_below": COUNTS_MAX,
                    "fit_iterations": FIT_ITERATIONS, "refine_ratio": REFINE_RATIO,
                    "refine_steps": REFINE_STEPS,
                    "midpoints_from_frames": TRIAL_FRAMES},
            "near": {"trial_frames": NF_TRIAL_FRAMES, "min_epochs": NF_MIN_EPOCHS,
                     "max_epochs": NF_MAX_EPOCHS, "patience": NF_PATIENCE,
                     "lowpass_sigma": NF_LOWPASS_SIGMA, "lowpass_epochs": NF_LOWPASS_EPOCHS}}


def blind_nearfield_probe(data, *, trial_frames: int = NF_TRIAL_FRAMES,
                          max_epochs: int = NF_MAX_EPOCHS, seed: int = 0) -> tuple:
    """The near-field probe a careful user would start from when the file has none.

    From the usual start (the root-mean frame back-propagated with a flat phase) PIE stalls
    in a trap -- loss ~0.03 where ~1e-5 is reachable, the probe barely moving (error ~0.9
    against the simulator's diffuser probe): the object's *amplitude* absorbs the speckle
    the probe lacks. Holding the object to ``|O| = 1`` (a weakly absorbing sample, as
    hard-X-ray near-field holography assumes) closes that route: only the probe can explain
    the intensity structure, and ePIE leaves the trap within ~30-600 epochs (slowest on
    low-contrast objects; on smooth ones, e.g. the "moon" image, not at all). The probe
    found so (error ~0.04) starts the unconstrained engines, which then fit the amplitude.

    Steps: ``sqrt(mean frame)`` with flat phase propagated back to the sample, scaled to the
    mean counts per frame; then ePIE (steps 1, 1; sequential; sub-pixel shifts) on the
    ``trial_frames`` frames nearest the scan centroid, the object projected onto ``|O| = 1``
    after every frame update and, for the first ``NF_LOWPASS_EPOCHS`` epochs, also held
    smooth (blurred by ``NF_LOWPASS_SIGMA`` px after each epoch: a smooth phase cannot take
    over the probe's speckle, which freed trapped trials); then up to ``max_epochs``
    epochs, stopped on a plateau (no 1 % gain in ``NF_PATIENCE`` epochs).

    Returns
    -------
    probe : complex64 ``(wy, wx)``
    report : dict with ``epochs``, ``loss_first``, ``loss_final``, ``escaped`` (loss fell
        below ``NF_ESCAPE_RATIO`` of the first epoch's) and ``loss_history``
    """
    trial = trial_set(data, trial_frames)
    model = model_for(trial)
    amp = torch.sqrt(torch.as_tensor(np.clip(trial.frames, 0, None)))
    idx0 = torch.zeros(1, dtype=torch.long)
    use = detector_mask_of(data.meta)
    # counts of the measured pixels only (a masked hot pixel would set the probe's power
    # and the loss scale behind `escaped`); the filled mean pattern has all pixels
    w = 1.0 if use is None else torch.as_tensor(np.asarray(use, bool), dtype=amp.dtype)
    total, n = float((amp**2 * w).sum()), len(trial.frames)
    mean = torch.as_tensor(np.sqrt(mean_pattern(data.frames, use=use))).to(torch.complex64)
    with torch.no_grad():
        probe = model.from_detector(mean[None], idx0).to(torch.complex64).clone()
    measured = float((mean.abs() ** 2 * w).sum()) / float((mean.abs() ** 2).sum())
    probe *= (total / n / measured / float((probe.abs() ** 2).sum())) ** 0.5
    obj = torch.ones(trial.object_shape, dtype=torch.complex64)
    pos = model.positions.detach().clone().to(torch.float64)
    sqrt_f = model.intensity_factors.detach().to(torch.float32).sqrt()
    st = PIEState(obj, probe, pos, model, amp, sqrt_f, alpha=1.0, beta=1.0, variant="epie",
                  detector_mask=as_detector_mask(use, trial.frame_shape, "cpu"))
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
                if ep < NF_LOWPASS_EPOCHS:
                    smooth = gaussian_blur(st.obj, NF_LOWPASS_SIGMA)
                    st.obj.copy_(torch.polar(torch.ones_like(smooth.real), smooth.angle()))
                losses.append(err / total)
                if ep + 1 == NF_LOWPASS_EPOCHS:  # the plateau counts from the free object on
                    best, since = np.inf, 0
                best, since = (losses[-1], 0) if losses[-1] < 0.99 * best else (best, since + 1)
                if (ep + 1 >= max(NF_MIN_EPOCHS, NF_LOWPASS_EPOCHS + NF_PATIENCE)
                        and since >= NF_PATIENCE):  # fmt: skip
                    break
    finally:
        torch.set_num_threads(threads)
    return st.probe[0].numpy().astype(np.complex64), {
        "epochs": len(losses), "loss_first": losses[0], "loss_final": losses[-1],
        "escaped": losses[-1] < NF_ESCAPE_RATIO * losses[0], "loss_history": losses}  # fmt: skip
