"""Pieces shared by the simulators: seeds, dose, scan errors, the noisy detector."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math

import numpy as np
import torch

from ptytasks.simulate.scans import object_shape_for, scan_centres

NOISE_FREE_FLUX = 1e6  # photons per frame when dose is None
H_C_EV_M = 1.239841984e-6  # h c, eV m (photon energy <-> wavelength)


def seeds(seed: int | None, n: int) -> list[int]:
    """Independent sub-seeds (object, scan, errors, probe, noise) from one seed."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def flux(dose: float | None, dose_unit: str, frame_shape: tuple[int, int]) -> float:
    """Photons per frame carried by the probe."""
    if dose is None:
        return NOISE_FREE_FLUX
    if not dose > 0:
        raise ValueError(f"dose must be > 0 photons (or None for noise-free); got {dose}")
    if dose_unit == "frame":
        return float(dose)
    if dose_unit == "pixel":
        return float(dose) * frame_shape[0] * frame_shape[1]
    raise ValueError(f"dose_unit must be 'frame' or 'pixel'; got {dose_unit!r}")


def random_errors(n: int, rms: float, seed: int) -> np.ndarray:
    """Zero-mean Gaussian 2-D errors ``(n, 2)`` rescaled to RMS length ``rms`` exactly."""
    if rms < 0:
        raise ValueError(f"position_error_px is an RMS length and must be >= 0; got {rms}")
    if rms == 0 or n < 2:
        return np.zeros((n, 2))
    e = np.random.default_rng(seed).standard_normal((n, 2))
    e -= e.mean(0)
    return e * (rms / math.sqrt((e**2).sum(1).mean()))


def scan(
    kind, diameter, overlap, window, n_positions, margin, seed_scan, seed_err,
    position_error_px, scale,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[tuple[int, int], tuple[int, int]]]:
    """True and nominal corners, the true scan's object shape, and the padding for both.

    The true scan alone fixes the object (its shape is ``base_shape``), so a given seed
    gives the same measurement whatever errors are injected. Where the nominal windows
    leave that object (less than ``margin`` free), the object is padded by whole pixels
    (``pad``, numpy ``((top, bottom), (left, right))``) and all corners shift with it;
    whole-pixel shifts leave the frames unchanged.

    ``scale`` is the nominal/true scale factor about the scan centroid.
    """
    c = scan_centres(kind, diameter, overlap, n_positions=n_positions, seed=seed_scan)
    errors = random_errors(len(c), position_error_px, seed_err)
    nominal = c.mean(0) + (c - c.mean(0)) * scale + errors
    half = np.asarray(window, dtype=np.float64) // 2
    lo = c.min(0) - half
    true_px = c - half - lo + margin
    nom_px = nominal - half - lo + margin
    base = object_shape_for(true_px, window, margin)
    before = np.ceil(np.maximum(0.0, margin - nom_px.min(0)) - 1e-9).astype(int)
    after = np.maximum(0, np.asarray(object_shape_for(nom_px, window, margin)) - base)
    true_px, nom_px = true_px + before, nom_px + before
    pad = ((int(before[0]), int(after[0])), (int(before[1]), int(after[1])))
    return true_px, nom_px, base, pad


def pad_object(obj: np.ndarray, pad) -> np.ndarray:
    """Extend the object to the nominal scan's shape by edge values (never illuminated)."""
    return np.pad(obj, pad, mode="edge") if any(map(any, pad)) else obj


@torch.no_grad()
def forward(model, obj: np.ndarray, probe: np.ndarray | None, batch: int = 256) -> np.ndarray:
    """Expected intensities for all frames, float32 ``(n, ny, nx)``."""
    o = torch.from_numpy(obj)
    p = None if probe is None else torch.from_numpy(probe)
    n = model.intensity_factors.shape[0]
    out = [model(o, p, torch.arange(s, min(n, s + batch))) for s in range(0, n, batch)]
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def detect(expected: np.ndarray, dose: float | None, seed: int) -> np.ndarray:
    """Poisson counts at the expected intensities, or the expectation itself (noise-free)."""
    if dose is None:
        return expected
    rng = np.random.default_rng(seed)
    return rng.poisson(expected.astype(np.float64)).astype(np.float32)


def slices(shape, kind, amplitude_range, phase_range, seed: int, n_slices: int, pad):
    """The true object ``(ny, nx)``, or ``(S, ny, nx)`` slices of different seeds, padded."""
    from ptytasks.simulate.objects import SEEDED, complex_object

    if int(n_slices) < 1:
        raise ValueError(f"n_slices must be >= 1; got {n_slices}")
    if int(n_slices) > 1 and kind not in SEEDED:  # every slice would be the same picture
        raise ValueError(f"object kind {kind!r} is one fixed picture: {n_slices} slices need "
                         f"a kind drawn per seed ({', '.join(SEEDED)})")
    # dead_leaves / blobs draw their amplitude with seed + 1: slices two seeds apart, so no
    # slice's amplitude is another's phase
    step = 2 if kind in ("dead_leaves", "blobs") else 1
    objs = [pad_object(complex_object(shape, kind, amplitude_range=amplitude_range,
                                      phase_range=phase_range, seed=seed + step * k), pad)
            for k in range(int(n_slices))]  # fmt: skip
    return objs[0] if len(objs) == 1 else np.stack(objs)


def mixed_state(probe: np.ndarray, fractions, seed: int) -> np.ndarray:
    """The coherent probe, or its partially coherent version with ``fractions`` of power
    per mode (:func:`ptytasks.physics.modes.partially_coherent_modes`)."""
    if fractions is None:
        return probe
    from ptytasks.physics.modes import partially_coherent_modes

    return partially_coherent_modes(probe, fractions, seed=seed % 2**31)


def specimen(scan_kind, diameter, overlap, window, n_positions, acq: Acquisition,
             scale: float | None = None, n_slices: int = 1):
    """The scanning simulators' shared sequence: true and nominal corners, then the true
    object (``(S, ny, nx)`` for ``n_slices`` > 1) on the true scan's padded shape.

    Seeds, margin, object and position errors come from ``acq``; ``scale`` is the
    nominal/true scan scale (default ``1 + acq.position_scale_error``; :func:`scan`).
    Returns ``true_px, nom_px, obj, pad``.
    """
    s_obj, s_scan, s_err = acq.seeds()[:3]
    scale = 1 + acq.position_scale_error if scale is None else scale
    true_px, nom_px, base, pad = scan(scan_kind, diameter, overlap, window, n_positions,
                                      acq.margin, s_scan, s_err, acq.position_error_px,
                                      scale)  # fmt: skip
    obj = slices(base, acq.object_kind, acq.amplitude_range, acq.phase_range, s_obj,
                 n_slices, pad)  # fmt: skip
    return true_px, nom_px, obj, pad


def measure(model, obj: np.ndarray, probe: np.ndarray | None, dose, seed: int) -> np.ndarray:
    """The frames: expected intensities of ``model``, Poisson-detected at ``dose``."""
    return detect(forward(model, obj, probe), dose, seed)


def make_meta(**kw) -> dict:
    """Provenance of a simulated dataset (every simulator records its settings here)."""
    return {"simulator": "ptytasks.simulate", **kw}


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """The settings every simulator shares, declared once (:func:`simulator`).

    Parameters
    ----------
    object_kind, amplitude_range, phase_range
        The object (:func:`~ptytasks.simulate.objects.complex_object`); phase in radians.
        Defaults differ by simulator.
    dose, dose_unit
        Photons per frame (or per detector pixel); ``None`` = noise-free.
    position_error_px : float
        RMS random position error, pixels (Fourier: spectrum pixels).
    position_scale_error : float
        Relative scan-scale error (Fourier: of the wavevectors, an LED-height error).
    distance_error, wavelength_error : float
        Relative errors of the nominal distance and wavelength; distance and wavelength
        errors also change the nominal pixel size where the geometry derives it.
    margin : float
        Free object pixels around the outermost windows (scanning modalities).
    seed : int or None
        One seed; object, scan, errors, probe and noise use independent sub-seeds.
    """

    object_kind: str = "camera"
    amplitude_range: tuple[float, float] = (0.8, 1.0)
    phase_range: tuple[float, float] = (0.0, math.pi / 2)
    dose: float | None = None
    dose_unit: str = "frame"
    position_error_px: float = 0.0
    position_scale_error: float = 0.0
    distance_error: float = 0.0
    wavelength_error: float = 0.0
    margin: float = 8.0
    seed: int | None = 0

    def seeds(self) -> list[int]:
        """Sub-seeds ``(object, scan, errors, probe, noise)`` (:func:`seeds`)."""
        return seeds(self.seed, 5)

    def flux(self, frame_shape: tuple[int, int]) -> float:
        """Photons per frame carried by the probe (:func:`flux`)."""
        return flux(self.dose, self.dose_unit, frame_shape)

    def meta(self, omit: tuple[str, ...] = (), **kw) -> dict:
        """:func:`make_meta` with the seed, dose, object kind and injected errors
        (less ``omit``), then ``kw``."""
        keys = ("seed", "dose", "dose_unit", "object_kind", "position_error_px",
                "position_scale_error", "distance_error", "wavelength_error")  # fmt: skip
        return make_meta(**{k: getattr(self, k) for k in keys if k not in omit}, **kw)


SHARED = tuple(f.name for f in dataclasses.fields(Acquisition))


def simulator(*, exclude: tuple[str, ...] = (), **defaults):
    """Give a simulator the :class:`Acquisition` keywords (less ``exclude``) with these
    ``defaults``; it receives them as one ``acq`` argument.

    Callers pass them flat (``simulate_farfield(dose=1e5, seed=3)``), and
    ``inspect.signature`` lists them with the simulator's own keywords (the CLI and
    :meth:`ptytasks.modalities.Modality.simulate_keywords` read it); an excluded one is an
    unexpected keyword (``TypeError``).
    """
    base = Acquisition(**defaults)
    names = [n for n in SHARED if n not in exclude]

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kw):
            shared = {k: kw.pop(k) for k in names if k in kw}
            return fn(*args, acq=dataclasses.replace(base, **shared), **kw)

        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "acq"]
        extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=getattr(base, n))
                 for n in names]  # fmt: skip
        run.__signature__ = sig.replace(parameters=own + extra)
        return run

    return wrap
