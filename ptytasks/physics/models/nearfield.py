"""Near-field (Fresnel-regime) ptychography: ``I = |propagate(P * O[p_i + r], z)|^2``.

The detector samples the propagated wave on the object-plane grid (same pitch). For a
cone-beam (magnified) geometry pass the *effective* distance and pixel from
:func:`ptytasks.physics.propagators.fresnel_scaling`: the plane-wave model at ``z2 / M`` with
pixel ``detector_pixel / M`` reproduces the magnified hologram (Fresnel scaling theorem).
"""

from __future__ import annotations

import torch
from torch import nn

from ptytasks.physics.models.base import ForwardModel, scalar_parameter
from ptytasks.physics.propagators import propagate
from ptytasks.physics.shifts import extract_patches


class NearField(ForwardModel):
    """Near-field ptychography by free-space propagation over ``distance``.

    Parameters
    ----------
    positions : array-like ``(n, 2)``
        Probe-window corners ``(y, x)`` in object pixels; the ``positions`` parameter.
    object_shape, probe_shape : (int, int)
        Object array and probe window (= detector frame) shapes.
    wavelength : float
        Metres; the ``wavelength`` parameter.
    distance : float
        Sample-to-detector (effective, for cone beam) distance, metres; the ``distance``
        parameter.
    pixel_size : float
        Object-plane (effective) pixel pitch, metres. Fixed (it sets the frequency grid).
    method : ``"angular_spectrum"`` (default, exact) or ``"fresnel"`` (paraxial).
    dtype : torch.dtype
        Real dtype of the parameters.

    Notes
    -----
    Propagation is periodic over the probe window (FFT convolution); keep the probe (or the
    window's useful content) away from the edges or pad the window. ``from_detector``
    propagates back by ``-distance``, the exact inverse for band-limited waves (evanescent
    components are lost).
    """

    modality = "nearfield"

    def __init__(
        self,
        positions,
        object_shape: tuple[int, int],
        probe_shape: tuple[int, int],
        *,
        wavelength: float,
        distance: float,
        pixel_size: float,
        method: str = "angular_spectrum",
        dtype: torch.dtype = torch.float32,
    ):
        pos = torch.as_tensor(positions, dtype=dtype)
        if pos.dim() != 2 or pos.shape[1] != 2:
            raise ValueError(f"positions must have shape (n, 2); got {tuple(pos.shape)}")
        if method not in ("angular_spectrum", "fresnel"):
            raise ValueError(f"unknown method {method!r}; use 'angular_spectrum' or 'fresnel'")
        super().__init__(pos.shape[0])
        self.object_shape = tuple(int(s) for s in object_shape)
        self.probe_shape = tuple(int(s) for s in probe_shape)
        self.pixel_size = float(pixel_size)
        self.method = method
        self.positions = nn.Parameter(pos, requires_grad=False)
        self.wavelength = scalar_parameter(wavelength, dtype)
        self.distance = scalar_parameter(distance, dtype)
        self.intensity_factors.data = self.intensity_factors.data.to(dtype)

    def exit_waves(self, obj: torch.Tensor, probe: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        patches = extract_patches(obj, self.positions[idx], tuple(probe.shape[-2:]))
        return self.exit_from_patches(probe, patches)

    def to_detector(self, exit_wave: torch.Tensor, idx: torch.Tensor, **fields) -> torch.Tensor:
        return propagate(
            exit_wave, self.pixel_size, self.wavelength, self.distance, method=self.method
        )

    def from_detector(self, wave: torch.Tensor, idx: torch.Tensor, **fields) -> torch.Tensor:
        return propagate(wave, self.pixel_size, self.wavelength, -self.distance, method=self.method)
