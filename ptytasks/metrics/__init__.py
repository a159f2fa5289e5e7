"""ptytasks.metrics: alignment, error metrics and Fourier ring correlation (NumPy).

Inputs may be numpy arrays or torch tensors (converted at the boundary); outputs are numpy
arrays and Python floats. Images are 2-D ``(y, x)`` (``docs/conventions.md``).
"""

from ptytasks.metrics.align import (
    align,
    estimate_ramp,
    global_scale,
    mask_weights,
    phase_ramp,
    register_shift,
    subpixel_shift,
    to_numpy,
)
from ptytasks.metrics.errors import (
    amplitude_phase,
    complex_error,
    phase_ssim,
    psnr,
    quality_report,
    ssim,
)
from ptytasks.metrics.frc import (
    FRCResult,
    Resolution,
    frc,
    half_split_indices,
    halfbit_threshold,
    hann_window,
    onebit_threshold,
    resolution,
    ring_indices,
    taper_mask,
    tukey_window,
)

__all__ = [
    "FRCResult",
    "Resolution",
    "align",
    "amplitude_phase",
    "complex_error",
    "estimate_ramp",
    "frc",
    "global_scale",
    "half_split_indices",
    "halfbit_threshold",
    "hann_window",
    "mask_weights",
    "onebit_threshold",
    "phase_ssim",
    "phase_ramp",
    "psnr",
    "quality_report",
    "register_shift",
    "resolution",
    "ring_indices",
    "ssim",
    "subpixel_shift",
    "taper_mask",
    "to_numpy",
    "tukey_window",
]
