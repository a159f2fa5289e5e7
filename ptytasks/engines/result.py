"""What every reconstruction engine returns.

One generic container for the projection engines (ePIE/rPIE, Fourier PIE) and the
gradient/neural-field engines, so flows, storage and metrics handle all engines alike.
Arrays are NumPy (host memory): a result outlives the device it was computed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ReconstructionResult:
    """A reconstruction and its history.

    Attributes
    ----------
    object : complex64 ``(ny, nx)`` (or ``(slices, ny, nx)``)
        The reconstructed object (for Fourier ptychography: the high-resolution object in
        real space, its spectrum inside the synthetic aperture: the band the images
        measure).
    probe : complex64 ``(ny, nx)`` or ``(modes, ny, nx)``, or None
        The probe (illumination); None where an engine has no probe.
    positions_px : float64 ``(scan, 2)`` or None
        Final (possibly refined) probe-window corners ``(y, x)`` in object pixels.
    wavevectors : float64 ``(scan, 2)`` or None
        Final illumination wavevectors ``(ky, kx)``, cycles per metre (Fourier ptychography).
    pupil : complex64 ``(ny, nx)`` or None
        Final pupil (Fourier ptychography), centred.
    params : dict[str, float]
        Final physical parameters (distances, wavelength, Zernike coefficients, ...).
    loss_history : list[float]
        One entry per epoch: the engine's data error (for the PIE engines the normalised
        amplitude error ``sum(| |Psi| - sqrt(I) |^2) / sum(I)`` over all frames).
    error_history : list[float]
        Optional per-epoch error against ground truth (filled only when a callback or
        the caller measured it); may be empty.
    timings : dict[str, float]
        Seconds: ``total`` and, where measured, ``per_epoch`` (mean) and others.
    engine : str
        Name of the engine (``"epie"``, ``"rpie"``, ``"fourier_pie"``, ...).
    options : dict
        The options the engine ran with (as a plain dict, for provenance).
    extras : dict
        Engine-specific additions (e.g. ``position_history``).
    """

    object: np.ndarray
    probe: np.ndarray | None = None
    positions_px: np.ndarray | None = None
    wavevectors: np.ndarray | None = None
    pupil: np.ndarray | None = None
    params: dict[str, float] = field(default_factory=dict)
    loss_history: list[float] = field(default_factory=list)
    error_history: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    engine: str = ""
    options: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """The last recorded loss (NaN when none was recorded)."""
        return float(self.loss_history[-1]) if self.loss_history else float("nan")

    @property
    def n_epochs(self) -> int:
        return len(self.loss_history)
