"""Fourier ptychography (FP): a high-resolution object seen through a low-NA objective.

Object ``O`` is ``(My, Mx)`` at pitch ``pixel_size``; each LED ``i`` gives a low-resolution
image ``(my, mx)`` (``My = upsample * my``) at pitch ``pixel_size * My / my``.

Wavevector convention (see ``docs/conventions.md``): ``k_i = (ky, kx)`` in cycles per metre
is the object spatial frequency that the tilted illumination brings to the *centre* of the
pupil; the low-resolution image of LED ``i`` sees the object spectrum ``S(f + k_i)`` for
``|f| <= NA / lambda``. Equivalently the illuminating plane wave is ``exp(-2 pi i k_i . r)``,
so ``k_i = (LED - sample) / (lambda * distance_to_LED)`` (``sin(theta) / lambda`` along the
direction from the sample to the LED). A positive ``kx`` thus selects the spectrum window to
the right of (larger column index than) the centre of ``fft2c(O)``.

Model::

    crop_i = S[c - m//2 + k_i * M * pixel_size + r]      (S = fft2c(O), c = M//2)
    psi_i  = (m / M) * ifft2c(crop_i * pupil)            (image-plane field)
    I_i    = |psi_i|^2                                   (or after a coded mask + propagation)

The crop uses :func:`~ptytasks.physics.shifts.extract_patches`, whose sub-pixel Fourier
shift makes the intensities differentiable in ``wavevectors``. That shift interpolates the
spectrum periodically over the window (a phase ramp on the low-resolution image, continuous
over the image and wrapping at its edge: :func:`~ptytasks.physics.shifts.window_freqs`), so a
sharp spectral feature (e.g. the DC spike of a flat object) at a non-integer window offset
leaks a little into dark-field images; simulation and reconstruction share the model.
The factor ``m / M`` makes a unit-amplitude transparent object give unit-intensity images
for any ``upsample``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ptytasks.physics.fft import fft2c, ifft2c
from ptytasks.physics.models.base import ForwardModel, scalar_parameter
from ptytasks.physics.propagators import propagate
from ptytasks.physics.shifts import coverage, extract_patches
from ptytasks.physics.zernike import zernike


class FourierPtychography(ForwardModel):
    """Fourier-ptychography forward model with a Zernike pupil and optional coded detection.

    Parameters
    ----------
    wavevectors : array-like ``(n, 2)``
        ``(ky, kx)`` in cycles per metre (convention in the module docstring); the
        ``wavevectors`` parameter.
    object_shape : (My, Mx)
        High-resolution object shape.
    image_shape : (my, mx)
        Low-resolution image shape; ``My / my == Mx / mx`` (the upsampling) is expected.
    wavelength : float
        Metres; parameter ``wavelength`` (enters the defocus phase; the aperture and the
        Zernike grid are fixed at construction).
    na : float
        Objective numerical aperture; the pupil cutoff is ``na / wavelength``.
    pixel_size : float
        High-resolution object pitch, metres.
    distance : float
        Defocus of the specimen, metres (``> 0``: the specimen field is propagated by
        ``+distance`` before the objective); parameter ``distance``.
    zernike_indices : int or iterable of int
        Noll indices of the pupil aberrations (int ``J`` -> ``1..J``); parameter ``zernike``
        (radians, zero at start).
    mask : complex array ``(my, mx)`` or None
        Coded detection: an image-plane mask followed by propagation over ``mask_distance``
        (metres) at the low-resolution pitch. ``None``: direct intensity detection.
    dtype : torch.dtype
        Real dtype of the parameters.
    """

    modality = "fourier"

    def __init__(
        self,
        wavevectors,
        object_shape: tuple[int, int],
        image_shape: tuple[int, int],
        *,
        wavelength: float,
        na: float,
        pixel_size: float,
        distance: float = 0.0,
        zernike_indices=15,
        mask=None,
        mask_distance: float = 0.0,
        dtype: torch.dtype = torch.float32,
    ):
        k = torch.as_tensor(wavevectors, dtype=dtype)
        if k.dim() != 2 or k.shape[1] != 2:
            raise ValueError(f"wavevectors must have shape (n, 2); got {tuple(k.shape)}")
        super().__init__(k.shape[0])
        self.object_shape = tuple(int(s) for s in object_shape)
        self.image_shape = tuple(int(s) for s in image_shape)
        (My, Mx), (my, mx) = self.object_shape, self.image_shape
        if my > My or mx > Mx:
            raise ValueError(f"image_shape {self.image_shape} exceeds object_shape {object_shape}")
        self.pixel_size = float(pixel_size)
        self.na = float(na)
        self.image_pixel = self.pixel_size * My / my
        self.wavevectors = nn.Parameter(k, requires_grad=False)
        self.wavelength = scalar_parameter(wavelength, dtype)
        self.distance = scalar_parameter(distance, dtype)
        idx = list(range(1, zernike_indices + 1)) if isinstance(zernike_indices, int) else [
            int(j) for j in zernike_indices
        ]
        self.zernike_indices = idx
        self.zernike = nn.Parameter(torch.zeros(len(idx), dtype=dtype), requires_grad=False)
        self.intensity_factors.data = self.intensity_factors.data.to(dtype)

        # Pupil-plane frequencies (cycles/m) relative to the pupil centre (my//2, mx//2).
        fy = (torch.arange(my, dtype=torch.float64) - my // 2) / (My * self.pixel_size)
        fx = (torch.arange(mx, dtype=torch.float64) - mx // 2) / (Mx * self.pixel_size)
        fy, fx = torch.meshgrid(fy, fx, indexing="ij")
        cutoff = self.na / float(wavelength)
        rho, theta = torch.sqrt(fy * fy + fx * fx) / cutoff, torch.atan2(fy, fx)
        basis = torch.stack([zernike(j, rho, theta) for j in idx]) if idx else rho[None] * 0
        self.register_buffer("aperture", (rho <= 1).to(dtype))
        self.register_buffer("basis", basis.to(dtype))
        self.register_buffer("f2", (fy * fy + fx * fx).to(dtype))
        # Spectrum pixel of zero frequency's window corner, and pixels per (cycle/m).
        corner = [My // 2 - my // 2, Mx // 2 - mx // 2]
        self.register_buffer("centre", torch.tensor(corner, dtype=dtype))
        self.register_buffer("k_to_px", torch.tensor([My, Mx], dtype=dtype) * self.pixel_size)
        self.scale = math.sqrt(my * mx / (My * Mx))
        cdt = {torch.float64: torch.complex128}.get(dtype, torch.complex64)
        self.mask_distance = float(mask_distance)
        self.register_buffer("mask", None if mask is None else torch.as_tensor(mask).to(cdt))

    # --- geometry -----------------------------------------------------------------------
    @property
    def spectrum_positions(self) -> torch.Tensor:
        """Window corners ``(n, 2)`` on ``fft2c(O)`` in spectrum pixels (differentiable)."""
        return self.centre + self.wavevectors * self.k_to_px

    def synthetic_aperture(self) -> torch.Tensor:
        """Bool ``(My, Mx)`` on ``fft2c(O)``: the spectrum pixels some LED's pupil window
        holds (the union of the pupil's support at every window, windows at whole pixels):
        the only part of the object the images measure at all. (A window at a sub-pixel
        offset is shifted periodically over its rectangle, module docstring, so its image
        also reads a little of the rectangle's corners.)"""
        support = self.aperture.detach().to(torch.float64)
        corners = self.spectrum_positions.detach().to(torch.float64)
        return coverage(corners, self.image_shape, self.object_shape, support) > 0.5

    def band_limited(self, obj: torch.Tensor) -> torch.Tensor:
        """``obj`` with its spectrum outside :meth:`synthetic_aperture` set to zero: the
        minimum-norm object that every image sees as it sees ``obj`` (exactly so for
        windows at whole pixels; see :meth:`synthetic_aperture`)."""
        band = self.synthetic_aperture().to(obj.device)
        return ifft2c(fft2c(obj) * band)

    def pupil_function(self) -> torch.Tensor:
        """Current pupil ``A exp(i (sum_j c_j Z_j + defocus phase))``, complex ``(my, mx)``."""
        phase = torch.tensordot(self.zernike, self.basis, dims=1)
        # Angular-spectrum defocus k z (sqrt(1 - q) - 1), written without cancellation.
        q = self.wavelength**2 * self.f2 * self.aperture
        phase = phase + (2 * math.pi / self.wavelength) * self.distance * (
            -q / (1 + torch.sqrt(1 - q))
        )
        return self.aperture * torch.polar(torch.ones_like(phase), phase)

    # --- the model ----------------------------------------------------------------------
    def exit_waves(self, obj: torch.Tensor, probe: torch.Tensor | None, idx: torch.Tensor,
                   *, check: bool = True):
        """Spectrum windows ``(b, my, mx)`` (``(b, K, my, mx)`` with illumination modes).

        ``probe`` is the real-space illumination envelope on the object grid: ``None`` (a
        unit plane wave per LED), ``(My, Mx)``, or ``(K, My, Mx)`` incoherent modes.
        ``check``: check that the windows lie in the spectrum (one device read); ``False``
        where the caller has checked these (frozen) windows already.
        """
        if probe is not None:
            if tuple(probe.shape[-2:]) != self.object_shape or probe.dim() not in (2, 3):
                raise ValueError(
                    f"Fourier ptychography takes probe=None or an illumination of the object "
                    f"shape {self.object_shape} (optionally with modes); got {tuple(probe.shape)}"
                )
            obj = obj * probe
        spec = fft2c(obj)
        patches = extract_patches(spec, self.spectrum_positions[idx], self.image_shape,
                                  spectrum=True, check=check)
        return patches  # (b, [K,] my, mx)

    def to_detector(
        self, exit_wave: torch.Tensor, idx: torch.Tensor, *, pupil=None, mask=None, **fields
    ) -> torch.Tensor:
        p = self.pupil_function() if pupil is None else pupil
        field = self.scale * ifft2c(exit_wave * p)
        m = self.mask if mask is None else mask
        if m is not None:
            field = propagate(m * field, self.image_pixel, self.wavelength, self.mask_distance)
        return field

    def from_detector(
        self, wave: torch.Tensor, idx: torch.Tensor, *, mask=None, eps: float = 1e-3, **fields
    ) -> torch.Tensor:
        """Back to the pupil plane: the *pupil-filtered* window ``pupil * crop``.

        The pupil is not invertible (zero outside the NA), so this stops before it; PIE-type
        engines update ``crop`` with ``conj(P) (psi' - P crop) / max|P|^2`` using
        :meth:`pupil_function`. A coded mask is undone as in
        :meth:`ptytasks.physics.models.coded.Coded.from_detector`.
        """
        m = self.mask if mask is None else mask
        if m is not None:
            wave = propagate(wave, self.image_pixel, self.wavelength, -self.mask_distance)
            a2 = m.real**2 + m.imag**2
            wave = wave * m.conj() / torch.maximum(a2, eps * a2.max().detach())
        return fft2c(wave) / self.scale
