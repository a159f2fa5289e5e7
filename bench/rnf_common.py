"""Shared helpers of the residual neural-field (RNF) scenarios in ``bench/bench_rnf.py``.

The far-field dataset every far-field scenario simulates (48 px frames, a zone plate with
about three phase wraps, 70 % overlap), the zone-plate probe prior at a wrong defocus, the
illuminated-pixel mask the errors are measured over, the probe's phase-wrap count, the
complex-error / FRC scores and a wall-clock timer. Imported as ``bench.rnf_common`` (the
entry point puts the repository root on ``sys.path``).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ptytasks.metrics import quality_report
from ptytasks.physics.shifts import coverage
from ptytasks.simulate import simulated_zone_plate
from ptytasks.simulate.datasets import simulate


def illuminated(data, frac: float = 0.1, indices=None) -> np.ndarray:
    """Object pixels covered by more than ``frac`` of the peak TRUE illumination."""
    gt = data.ground_truth
    pos = gt["positions_px"] if indices is None else gt["positions_px"][indices]
    w = torch.as_tensor(np.abs(gt["probe"]) ** 2, dtype=torch.float64)
    c = coverage(torch.as_tensor(pos), data.frame_shape, data.object_shape, w).numpy()
    return c > frac * c.max()


def farfield(n_positions=49, *, frame=48, diameter=24.0, seed=0, **kw):
    """The far-field set of the scenarios: 48 px frames, a zone plate of 24 px footprint
    (about three phase wraps across it), 70 % overlap."""
    kw.setdefault("overlap", 0.7)
    kw.setdefault("scan", "fermat")
    return simulate(
        "farfield",
        frame_size=frame,
        n_positions=n_positions,
        probe_diameter_px=diameter,
        seed=seed,
        **kw,
    )


def zone_plate_prior(data, defocus_error: float = 0.05) -> np.ndarray:
    """The zone-plate probe the simulator used, but at a ``defocus_error`` wrong defocus
    (a probe "estimated from the defocus", the paper's prior), at the true flux."""
    gt = data.ground_truth
    n = data.frame_shape[0]
    p = simulated_zone_plate((n, n), gt["pixel_size"], gt["wavelength"],
                             data.meta["probe_diameter_px"], 1 + defocus_error).numpy()
    return p * math.sqrt(data.meta["flux_per_frame"])


def phase_wraps(probe: np.ndarray, frac: float = 0.2) -> float:
    """Unwrapped phase range across the probe footprint (|P| > frac max), in turns."""
    from skimage.restoration import unwrap_phase

    m = np.abs(probe) > frac * np.abs(probe).max()
    ph = unwrap_phase(np.angle(probe))
    return float((ph[m].max() - ph[m].min()) / (2 * np.pi))


def scores(obj, truth, mask) -> dict:
    """Complex error and FRC resolution (0.5 threshold against the truth, cycles/px)."""
    q = quality_report(obj, truth, mask, threshold=0.5)
    return {"complex_error": q["complex_error"], "frc_resolution": q["frc_resolution"]}


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
