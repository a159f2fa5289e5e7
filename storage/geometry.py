"""Small geometry helpers shared by the readers (units: SI, positions in object pixels)."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "DEFAULT_MARGIN",
    "H_C_EV_M",
    "H_C_J_M",
    "positions_from_metres",
    "shift_positions",
    "object_shape_for",
    "energy_ev_to_wavelength",
    "wavelength_to_energy_ev",
]

#: Object pixels kept free around the outermost probe windows (room for position
#: refinement and for the probe tails).
DEFAULT_MARGIN = 8
H_C_EV_M = 1.239841984e-6  # h*c in eV*m
H_C_J_M = 1.98644586e-25  # h*c in J*m (CXI stores source energy in joules)
EV = 1.602176634e-19  # joules per electronvolt


def energy_ev_to_wavelength(energy_ev: float) -> float:
    """Photon wavelength (m) of a beam energy in eV."""
    return H_C_EV_M / float(energy_ev)


def wavelength_to_energy_ev(wavelength: float) -> float:
    """Photon energy (eV) of a wavelength in m."""
    return H_C_EV_M / float(wavelength)


def shift_positions(positions_px: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Shift ``(scan, 2)`` pixel positions so their minimum is ``margin`` on each axis."""
    p = np.asarray(positions_px, dtype=np.float64)
    return p - p.min(0) + float(margin)


def positions_from_metres(
    positions_m: np.ndarray, pixel_size: float, margin: float = DEFAULT_MARGIN
) -> np.ndarray:
    """``(scan, (y, x))`` metres -> object-pixel corners per ``docs/conventions.md``.

    ``positions_px = (positions_m - positions_m.min(0)) / pixel_size + margin``.
    """
    p = np.asarray(positions_m, dtype=np.float64)
    return (p - p.min(0)) / float(pixel_size) + float(margin)


def object_shape_for(
    positions_px: np.ndarray, window: tuple[int, int], margin: float = DEFAULT_MARGIN
) -> tuple[int, int]:
    """Smallest object shape holding every ``window`` at ``positions_px`` plus ``margin``."""
    p = np.asarray(positions_px, dtype=np.float64)
    hi = p.max(0) + np.asarray(window, dtype=np.float64) + float(margin)
    return int(math.ceil(hi[0])), int(math.ceil(hi[1]))
