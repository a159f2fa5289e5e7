"""Free-space propagators: Fraunhofer, angular spectrum, Fresnel transfer function.

All are differentiable; ``distance`` and ``wavelength`` may be tensors that require
gradients, scalar or with shape broadcastable to the field's leading (batch) dims.
Sign and phase conventions: ``docs/conventions.md`` (the constant ``exp(ikz)`` is dropped).
"""

from __future__ import annotations

import math

import torch

from ptytasks.physics.fft import fft2c, fft2u, freq_grid, ifft2c, ifft2u, real_dtype


def fraunhofer(field: torch.Tensor, *, centered: bool = True) -> torch.Tensor:
    """Far-field (Fraunhofer) diffraction pattern amplitude of ``field``.

    Parameters
    ----------
    field : complex tensor ``(..., ny, nx)``
        Exit wave on the sample plane.
    centered : bool
        ``True`` (the store's convention) puts zero frequency at ``(ny//2, nx//2)``;
        ``False`` leaves it at ``(0, 0)``.

    Returns
    -------
    complex tensor ``(..., ny, nx)``, unitary so ``sum|field|^2 == sum|out|^2``.
    """
    return fft2c(field) if centered else fft2u(field)


def inverse_fraunhofer(wave: torch.Tensor, *, centered: bool = True) -> torch.Tensor:
    """Inverse of :func:`fraunhofer` (detector wave back to the sample plane)."""
    return ifft2c(wave) if centered else ifft2u(wave)


def _as_param(value, like: torch.Tensor) -> torch.Tensor:
    """A real tensor on ``like``'s device, broadcastable against ``(..., ny, nx)``."""
    t = torch.as_tensor(value, dtype=real_dtype(like.dtype), device=like.device)
    return t.reshape(*t.shape, 1, 1)


def angular_spectrum_tf(
    shape: tuple[int, int],
    pixel_size: float,
    wavelength: float | torch.Tensor,
    distance: float | torch.Tensor,
    *,
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Angular-spectrum transfer function ``exp(i k z (sqrt(1 - (lambda f)^2) - 1))``.

    Unshifted frequency order (matches :func:`fft2u`). Evanescent frequencies are zero.

    Parameters
    ----------
    shape : (ny, nx)
    pixel_size : float
        Sampling pitch, metres.
    wavelength, distance : float or tensor
        Metres. Tensors keep their graph; leading shapes broadcast to batch dims.
    """
    rdt = real_dtype(dtype)
    fy, fx = freq_grid(shape, pixel_size, dtype=rdt, device=device)
    probe = torch.empty(0, dtype=dtype, device=device)
    lam = _as_param(wavelength, probe)
    z = _as_param(distance, probe)
    q = (lam * lam) * (fy * fy + fx * fx)  # (lambda f)^2
    propagating = q < 1
    qc = torch.where(propagating, q, torch.zeros_like(q))
    # sqrt(1-q) - 1 written stably: -q / (1 + sqrt(1-q)); avoids cancellation in float32.
    phase = (2 * math.pi / lam) * z * (-qc / (1 + torch.sqrt(1 - qc)))
    h = torch.polar(torch.ones_like(phase), phase)
    return torch.where(propagating, h, torch.zeros_like(h))


def fresnel_tf(
    shape: tuple[int, int],
    pixel_size: float,
    wavelength: float | torch.Tensor,
    distance: float | torch.Tensor,
    *,
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Fresnel (paraxial) transfer function ``exp(-i pi lambda z (fx^2 + fy^2))``.

    Unshifted frequency order; same arguments as :func:`angular_spectrum_tf`.
    """
    rdt = real_dtype(dtype)
    fy, fx = freq_grid(shape, pixel_size, dtype=rdt, device=device)
    probe = torch.empty(0, dtype=dtype, device=device)
    lam = _as_param(wavelength, probe)
    z = _as_param(distance, probe)
    phase = -math.pi * lam * z * (fy * fy + fx * fx)
    return torch.polar(torch.ones_like(phase), phase)


def propagate(
    field: torch.Tensor,
    pixel_size: float,
    wavelength: float | torch.Tensor,
    distance: float | torch.Tensor,
    *,
    method: str = "angular_spectrum",
) -> torch.Tensor:
    """Propagate ``field`` by ``distance`` (metres; negative goes back).

    Parameters
    ----------
    field : complex tensor ``(..., ny, nx)``
    pixel_size : float
        Sampling pitch in metres (unchanged by the propagation).
    wavelength, distance : float or tensor
        Metres; differentiable.
    method : ``"angular_spectrum"`` (exact scalar diffraction) or ``"fresnel"`` (paraxial).

    Returns
    -------
    complex tensor of the same shape. Energy is conserved for band-limited fields.
    """
    if method == "angular_spectrum":
        tf = angular_spectrum_tf
    elif method == "fresnel":
        tf = fresnel_tf
    else:
        raise ValueError(
            f"unknown propagation method {method!r}; use 'angular_spectrum' or 'fresnel'"
        )
    h = tf(
        field.shape[-2:], pixel_size, wavelength, distance, dtype=field.dtype, device=field.device
    )
    return ifft2u(fft2u(field) * h)


def fresnel_scaling(z1: float, z2: float, detector_pixel: float) -> dict[str, float]:
    """Fresnel scaling theorem for a cone-beam (point-source, magnified) geometry.

    A sample at ``z1`` downstream of a point focus, imaged on a detector at ``z2`` behind the
    sample, is equivalent to a plane-wave experiment with magnification ``M = (z1+z2)/z1``,
    an effective pixel ``detector_pixel / M`` and an effective distance ``z2 / M``.

    Parameters
    ----------
    z1 : float
        Focus-to-sample distance, metres (> 0).
    z2 : float
        Sample-to-detector distance, metres (> 0).
    detector_pixel : float
        Detector pixel pitch, metres.

    Returns
    -------
    dict with ``magnification``, ``effective_pixel`` (m), ``effective_distance`` (m).
    """
    if z1 <= 0 or z2 <= 0 or detector_pixel <= 0:
        raise ValueError(
            f"fresnel_scaling needs positive z1, z2 and detector_pixel; got {z1=}, {z2=}, "
            f"{detector_pixel=}"
        )
    m = (z1 + z2) / z1
    return {
        "magnification": m,
        "effective_pixel": detector_pixel / m,
        "effective_distance": z2 / m,
    }
