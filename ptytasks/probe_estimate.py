"""Blind probe estimates from the measured frames, and a probe health check.

The estimators that run PIE on a trial set are
:mod:`ptytasks.engines.blind_probe` (far field: footprint and defocus chosen by held-out
frames; near field: a phase-only-object ePIE); the pieces they use are here.

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
  the fit, choose -- at high counts. Below 64 counts per pixel every object fitted to the
  few photons predicts unseen frames badly and the candidate nearest the mean pattern (the
  smallest) wins; there the trial's own Poisson deviance with the candidate *held*
  chooses (a wrong defocus cannot make overlapping frames agree;
  :func:`ptytasks.engines.blind_probe.trial_deviance`);
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


def mean_pattern(frames, *, clip: bool = True, use: np.ndarray | None = None) -> np.ndarray:
    """Mean frame (counts, float64), read a block at a time for lazy frame stores.

    ``clip``: negative counts (background-subtracted detectors) count as 0, as a probe
    amplitude ``sqrt(mean)`` needs; ``False`` keeps them (a plain mean). ``use``: the
    detector's usable pixels (bool, True = use; None: all); the others are filled from
    their usable neighbours (:func:`fill_unused`).
    """
    mean = _mean_frame(frames, clip)
    return mean if use is None else fill_unused(mean, use)


def fill_unused(image: np.ndarray, use: np.ndarray) -> np.ndarray:
    """``image`` with each pixel outside ``use`` set to the mean of its usable 8-neighbours,
    filled ring by ring inwards from the usable ones (a dead line, a split-pixel line or a
    hot pixel fitted by no engine would otherwise put a dark line or a spike into a probe
    estimated from the mean pattern). ``use`` all False: ``image`` unchanged."""
    from scipy.ndimage import convolve

    out = np.array(image, np.float64, copy=True)
    known = np.asarray(use, bool).copy()
    if known.shape != out.shape:
        raise ValueError(f"mask shape {known.shape} != image shape {out.shape}")
    ring8 = np.ones((3, 3))
    ring8[1, 1] = 0.0  # the 8 neighbours, not the pixel itself
    while known.any() and not known.all():
        s = convolve(np.where(known, out, 0.0), ring8, mode="constant")
        c = convolve(known.astype(np.float64), ring8, mode="constant")
        ring = ~known & (c > 0)
        out[ring] = s[ring] / c[ring]
        known |= ring
    return out


def _mean_frame(frames, clip: bool) -> np.ndarray:
    """:func:`mean_pattern` before any filling."""
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


def area_radius(support: np.ndarray) -> float:
    """Radius of the disk with the area of ``support`` (detector pixels, at least 1): the
    bright field's radius ``r_a`` that the candidates' defocus and the in-focus spot
    ``N / r_a`` are measured by."""
    return max(float(np.sqrt(np.sum(support) / np.pi)), 1.0)


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
    r_a = area_radius(support)
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
