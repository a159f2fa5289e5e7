"""Lensless coded ptychography (coded surface on the image sensor).

The specimen is translated over a fixed illumination; the sensor-sized window of the
object at corner ``p_i`` (object pixels, ``docs/conventions.md``) gives the exit wave
``psi = illumination * O[p_i + r]``. It propagates ``distance`` to a thin coded surface
(complex transmission ``S``) coated on the sensor, then ``surface_distance`` to the pixels:

``I_i = |prop(S * prop(psi_i, distance), surface_distance)|^2``.

All planes share the object-plane pixel pitch (unit magnification, lensless).
"""

from __future__ import annotations

import torch
from torch import nn

from ptytasks.physics.fft import fft2u, ifft2u
from ptytasks.physics.models.base import ForwardModel, scalar_parameter
from ptytasks.physics.propagators import angular_spectrum_tf, fresnel_tf, propagate
from ptytasks.physics.shifts import extract_patches

_TF = {"angular_spectrum": angular_spectrum_tf, "fresnel": fresnel_tf}


class Coded(ForwardModel):
    """Coded ptychography forward model.

    Parameters
    ----------
    positions : array-like ``(n, 2)``
        Sensor-window corners ``(y, x)`` on the object, object pixels; the ``positions``
        parameter.
    object_shape : (int, int)
        Object array shape.
    sensor_shape : (int, int)
        Window / sensor shape (the illumination and the surface have this shape).
    wavelength : float
        Metres; parameter ``wavelength``.
    distance : float
        Specimen-to-coded-surface distance, metres; parameter ``distance``.
    surface_distance : float
        Coded-surface-to-pixel distance, metres (often a few micrometres);
        parameter ``surface_distance``.
    pixel_size : float
        Sensor (= object-plane) pixel pitch, metres.
    surface : complex array ``(ny, nx)`` or None
        Coded-surface transmission; ``None`` means no coding (ones). Stored as the frozen
        complex parameter ``surface`` (``learnable("surface")`` recovers it); a per-call
        ``surface=`` overrides it (e.g. from a neural field).
    method : ``"angular_spectrum"`` or ``"fresnel"``.
    dtype : torch.dtype
        Real dtype of the parameters (the surface gets the matching complex dtype).
    """

    modality = "coded"

    def __init__(
        self,
        positions,
        object_shape: tuple[int, int],
        sensor_shape: tuple[int, int],
        *,
        wavelength: float,
        distance: float,
        surface_distance: float,
        pixel_size: float,
        surface=None,
        method: str = "angular_spectrum",
        dtype: torch.dtype = torch.float32,
    ):
        pos = torch.as_tensor(positions, dtype=dtype)
        if pos.dim() != 2 or pos.shape[1] != 2:
            raise ValueError(f"positions must have shape (n, 2); got {tuple(pos.shape)}")
        super().__init__(pos.shape[0])
        cdt = {torch.float64: torch.complex128}.get(dtype, torch.complex64)
        self.object_shape = tuple(int(s) for s in object_shape)
        self.probe_shape = tuple(int(s) for s in sensor_shape)
        self.pixel_size = float(pixel_size)
        self.method = method
        self.positions = nn.Parameter(pos, requires_grad=False)
        self.wavelength = scalar_parameter(wavelength, dtype)
        self.distance = scalar_parameter(distance, dtype)
        self.surface_distance = scalar_parameter(surface_distance, dtype)
        s = torch.ones(self.probe_shape, dtype=cdt) if surface is None else torch.as_tensor(surface)
        if tuple(s.shape) != self.probe_shape:
            raise ValueError(f"surface shape {tuple(s.shape)} != sensor shape {self.probe_shape}")
        self.surface = nn.Parameter(s.to(cdt), requires_grad=False)
        self._tf_cache: dict = {}
        self.intensity_factors.data = self.intensity_factors.data.to(dtype)

    def propagate_by(self, w: torch.Tensor, name: str, sign: int = 1) -> torch.Tensor:
        """``w`` propagated by ``sign`` times the model's distance ``name`` (``"distance"``
        or ``"surface_distance"``) at its wavelength."""
        z, lam = getattr(self, name), self.wavelength
        if self.method not in _TF or (torch.is_grad_enabled() and (z.requires_grad
                                                                 or lam.requires_grad)):
            return propagate(w, self.pixel_size, lam, sign * z, method=self.method)
        # Fixed geometry (projection engines, frozen parameters): the transfer function
        # costs twice the FFTs it multiplies, so it is kept. Keyed by the parameters'
        # versions, not their values: reading a value from a GPU waits for the device, and
        # cannot happen at all inside a CUDA graph; any in-place change bumps the version
        # (change them through the parameter: writes to ``.data`` bypass its version).
        key = (tuple(w.shape[-2:]), name, sign, z._version, z.data_ptr(), lam._version,
               lam.data_ptr(), w.dtype, w.device)
        h = self._tf_cache.get(key)
        if h is None:
            h = _TF[self.method](key[0], self.pixel_size, float(lam), sign * float(z),
                                 dtype=w.dtype, device=w.device)  # fmt: skip
            if len(self._tf_cache) >= 8:
                self._tf_cache.clear()
            self._tf_cache[key] = h
        return ifft2u(fft2u(w) * h)

    def exit_waves(self, obj: torch.Tensor, probe: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        patches = extract_patches(obj, self.positions[idx], tuple(probe.shape[-2:]))
        return self.exit_from_patches(probe, patches)  # thin, or through the slices

    def to_detector(
        self, exit_wave: torch.Tensor, idx: torch.Tensor, *, surface=None, **fields
    ) -> torch.Tensor:
        s = self.surface if surface is None else surface
        return self.propagate_by(s * self.propagate_by(exit_wave, "distance"), "surface_distance")

    def from_detector(
        self, wave: torch.Tensor, idx: torch.Tensor, *, surface=None, eps: float = 1e-3, **fields
    ) -> torch.Tensor:
        """Back to the specimen plane, dividing by the surface where it transmits.

        Uses ``conj(S) / max(|S|^2, eps max|S|^2)``: the exact inverse wherever
        ``|S|^2 >= eps max|S|^2`` (everywhere for a phase-only surface), bounded where an
        amplitude mask is nearly opaque.
        """
        s = self.surface if surface is None else surface
        w = self.propagate_by(wave, "surface_distance", -1)
        a2 = s.real**2 + s.imag**2
        inv = s.conj() / torch.maximum(a2, eps * a2.max().detach())
        return self.propagate_by(w * inv, "distance", -1)
