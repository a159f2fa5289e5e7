"""Zernike polynomials on the unit disk, Noll-indexed and orthonormal.

Index convention (Noll 1976, J. Opt. Soc. Am. 66, 207): a single index ``j >= 1``.
``j = 1`` piston, ``2`` tilt x, ``3`` tilt y, ``4`` defocus, ``5``/``6`` astigmatism
(oblique ``m=-2`` / vertical ``m=+2``), ``7``/``8`` coma (y ``m=-1`` / x ``m=+1``),
``9``/``10`` trefoil, ``11`` primary spherical. Within a radial order ``n``, ``|m|``
increases with ``j``; even ``j`` carry ``cos(m theta)`` (``m > 0``), odd ``j``
``sin(|m| theta)`` (``m < 0``).

Normalisation: ``Z_j = sqrt(n+1) R_n^|m|(rho)`` for ``m = 0`` and
``sqrt(2(n+1)) R_n^|m|(rho) {cos, sin}(|m| theta)`` otherwise, so the mean over the unit
disk of ``Z_i Z_j`` is ``delta_ij`` and a coefficient ``c_j`` (radians) contributes an RMS
phase ``|c_j|`` over the pupil.

Axes: ``rho`` and ``theta`` are measured from the array centre pixel ``(N//2, N//2)``;
``theta = atan2(y, x)`` with ``x`` along columns and ``y`` along rows (increasing index).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order ``n`` and signed azimuthal order ``m`` of Noll index ``j >= 1``."""
    if j < 1:
        raise ValueError(f"Noll indices start at 1; got {j}")
    n = int((math.isqrt(8 * (j - 1) + 1) - 1) // 2)
    p = j - n * (n + 1) // 2  # 1-based position within order n
    k = n % 2
    m = ((p + k) // 2) * 2 - k
    if m != 0 and j % 2 == 1:
        m = -m
    return n, m


def nm_to_noll(n: int, m: int) -> int:
    """Noll index of ``(n, m)``; needs ``|m| <= n`` and ``n - |m|`` even."""
    if n < 0 or abs(m) > n or (n - abs(m)) % 2:
        raise ValueError(f"({n}, {m}) is not a Zernike order: need |m| <= n, n - |m| even")
    for j in range(n * (n + 1) // 2 + 1, (n + 1) * (n + 2) // 2 + 1):
        if noll_to_nm(j) == (n, m):
            return j
    raise AssertionError("unreachable")  # pragma: no cover


def radial(n: int, m: int, rho: torch.Tensor) -> torch.Tensor:
    """Radial polynomial ``R_n^|m|(rho)`` (unnormalised, ``R(1) = 1``)."""
    m = abs(m)
    out = torch.zeros_like(rho)
    for k in range((n - m) // 2 + 1):
        c = (-1) ** k * math.factorial(n - k) / (
            math.factorial(k) * math.factorial((n + m) // 2 - k) * math.factorial((n - m) // 2 - k)
        )
        out = out + c * rho ** (n - 2 * k)
    return out


def zernike(j: int, rho: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Orthonormal Zernike term ``Z_j(rho, theta)``; zero outside the unit disk."""
    n, m = noll_to_nm(j)
    r = radial(n, m, rho) * math.sqrt(n + 1)
    if m > 0:
        r = r * math.sqrt(2) * torch.cos(m * theta)
    elif m < 0:
        r = r * math.sqrt(2) * torch.sin(-m * theta)
    return torch.where(rho <= 1, r, torch.zeros_like(r))


def _indices(indices: int | Iterable[int]) -> list[int]:
    return list(range(1, indices + 1)) if isinstance(indices, int) else [int(j) for j in indices]


def zernike_basis(
    shape: tuple[int, int],
    radius: float,
    indices: int | Iterable[int] = 15,
    *,
    pixel_size: float = 1.0,
    center: tuple[float, float] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Zernike terms sampled on a grid, ``(J, ny, nx)``.

    Parameters
    ----------
    shape : (ny, nx)
    radius : float
        Disk radius in units of ``pixel_size``: pixels by default, or for a pupil
        ``radius = NA / wavelength`` with ``pixel_size`` the frequency pitch (cycles/m).
    indices : int or iterable of int
        ``J`` -> Noll ``1..J``; or explicit Noll indices.
    pixel_size : float
        Grid pitch.
    center : (cy, cx) in pixels or None
        Disk centre; default ``(ny//2, nx//2)`` (the centred-FFT zero frequency).

    Returns
    -------
    real tensor ``(J, ny, nx)``, zero outside the disk.
    """
    ny, nx = shape
    cy, cx = (ny // 2, nx // 2) if center is None else center
    y = (torch.arange(ny, dtype=torch.float64, device=device) - cy) * pixel_size / radius
    x = (torch.arange(nx, dtype=torch.float64, device=device) - cx) * pixel_size / radius
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    rho = torch.sqrt(yy * yy + xx * xx)
    theta = torch.atan2(yy, xx)
    basis = torch.stack([zernike(j, rho, theta) for j in _indices(indices)])
    return basis.to(dtype)


def disk(
    shape: tuple[int, int],
    radius: float,
    *,
    pixel_size: float = 1.0,
    center: tuple[float, float] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Indicator of the disk ``rho <= 1`` on the same grid as :func:`zernike_basis`."""
    ny, nx = shape
    cy, cx = (ny // 2, nx // 2) if center is None else center
    y = (torch.arange(ny, dtype=torch.float64, device=device) - cy) * pixel_size
    x = (torch.arange(nx, dtype=torch.float64, device=device) - cx) * pixel_size
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return (yy * yy + xx * xx <= radius * radius).to(dtype)


def pupil(
    amplitude: torch.Tensor, coefficients: torch.Tensor, basis: torch.Tensor
) -> torch.Tensor:
    """Pupil function ``A exp(i sum_j c_j Z_j)``.

    Parameters
    ----------
    amplitude : real tensor ``(ny, nx)``
        Aperture transmission ``A`` (e.g. :func:`disk`).
    coefficients : real tensor ``(..., J)``
        Zernike coefficients, radians of pupil phase (differentiable).
    basis : real tensor ``(J, ny, nx)``
        From :func:`zernike_basis`.

    Returns
    -------
    complex tensor ``(..., ny, nx)``.
    """
    phase = torch.tensordot(coefficients, basis.to(coefficients.dtype), dims=([-1], [0]))
    return amplitude * torch.polar(torch.ones_like(phase), phase)
