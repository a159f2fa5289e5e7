"""Simulated ptychography data: test objects, scan patterns and datasets per modality.

``simulate(modality, **kwargs) -> PtychoData`` is the entry point; the true object, probe
and geometry are in ``data.ground_truth``, the nominal (possibly erroneous) geometry in the
dataset itself. Names are resolved lazily, so importing ``ptytasks.simulate.scans`` or
``.objects`` does not pull in torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "cells_object": "coded_large",
    "coded_surface": "coded_fourier",
    "led_wavevectors": "coded_fourier",
    "simulate_coded": "coded_fourier",
    "coded_field": "coded_large",
    "simulate_fourier": "coded_fourier",
    "simulate": "datasets",
    "simulate_farfield": "datasets",
    "simulate_nearfield": "datasets",
    "simulated_zone_plate": "datasets",
    "KINDS": "objects",
    "complex_object": "objects",
    "image": "objects",
    "SCANS": "scans",
    "object_shape_for": "scans",
    "overlap_from_step": "scans",
    "place": "scans",
    "scan_centres": "scans",
    "scan_overlap": "scans",
    "scan_positions": "scans",
    "step_from_overlap": "scans",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
