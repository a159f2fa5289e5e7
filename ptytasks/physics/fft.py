"""Unitary, centred 2-D Fourier transforms and frequency grids.

Zero frequency sits at pixel ``(N//2, N//2)`` after :func:`fft2c`; see
``docs/conventions.md``.
"""

from __future__ import annotations

import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Unitary 2-D FFT over the last two axes with zero frequency at the centre."""
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=_DIMS)


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c`."""
    return torch.fft.ifft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho")


def fft2u(x: torch.Tensor) -> torch.Tensor:
    """Unitary 2-D FFT with zero frequency at pixel ``(0, 0)`` (no shift)."""
    return torch.fft.fft2(x, norm="ortho")


def ifft2u(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2u`."""
    return torch.fft.ifft2(x, norm="ortho")


def freq_grid(
    shape: tuple[int, int],
    pixel_size: float | torch.Tensor = 1.0,
    *,
    centered: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial-frequency grids ``(fy, fx)`` for an image of ``shape``.

    Parameters
    ----------
    shape : (ny, nx)
        Image shape in pixels.
    pixel_size : float or tensor
        Sampling pitch in metres (or 1 for cycles per pixel). A tensor keeps its graph.
    centered : bool
        ``False``: numpy ``fftfreq`` order (zero at index 0, matching :func:`fft2u`);
        ``True``: shifted order (zero at ``N//2``, matching :func:`fft2c`).

    Returns
    -------
    fy, fx : tensors of shape ``(ny, nx)``
        Frequencies in cycles per unit of ``pixel_size``.
    """
    ny, nx = shape
    fy = torch.fft.fftfreq(ny, dtype=dtype, device=device)
    fx = torch.fft.fftfreq(nx, dtype=dtype, device=device)
    if centered:
        fy, fx = torch.fft.fftshift(fy), torch.fft.fftshift(fx)
    gy, gx = torch.meshgrid(fy, fx, indexing="ij")
    return gy / pixel_size, gx / pixel_size


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` (real or complex, over its last two axes) convolved with a periodic Gaussian
    of ``sigma`` pixels (standard deviation); its mean is kept (the kernel's gain at zero
    frequency is 1). The result is complex."""
    fy, fx = freq_grid(tuple(x.shape[-2:]), dtype=torch.float64, device=x.device)
    g = torch.exp(-2.0 * (torch.pi * sigma) ** 2 * (fy**2 + fx**2)).to(real_dtype(x.dtype))
    return torch.fft.ifft2(torch.fft.fft2(x) * g)


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype matching a complex (or real) dtype."""
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype matching a real (or complex) dtype."""
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(dtype, dtype)
