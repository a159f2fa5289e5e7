"""2-D Haar wavelet transform in torch (real or complex, differentiable, any device).

One level splits each 2x2 block ``[[a, b], [c, d]]`` of the image into (paper Methods:
"down-sampling operations on the four quadrants")::

    approximation  cA = (a + b + c + d) / 2
    horizontal     cH = (a + b - c - d) / 2
    vertical       cV = (a - b + c - d) / 2
    diagonal       cD = (a - b - c + d) / 2

which is orthonormal on even sizes and equals ``pywt.dwt2(x, "haar")`` (same signs and
order; odd sizes are extended by repeating the last row/column, as pywt's default
``"symmetric"`` mode does for Haar -- so there the edge row/column counts twice and Parseval
does not hold).
"""

from __future__ import annotations

import torch

Subbands = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if not (ph or pw):
        return x
    # replicate the last row/column (== pywt "symmetric" for a 2-tap filter)
    if ph:
        x = torch.cat([x, x[..., -1:, :]], -2)
    if pw:
        x = torch.cat([x, x[..., :, -1:]], -1)
    return x


def haar2d(x: torch.Tensor) -> tuple[torch.Tensor, Subbands]:
    """One level of the 2-D Haar transform over the last two axes.

    Parameters
    ----------
    x : tensor ``(..., H, W)``, real or complex

    Returns
    -------
    cA, (cH, cV, cD) : tensors ``(..., ceil(H/2), ceil(W/2))``
        Approximation and horizontal/vertical/diagonal details, as ``pywt.dwt2``.
    """
    x = _pad_even(x)
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    s_ab, d_ab = a + b, a - b
    s_cd, d_cd = c + d, c - d
    return (s_ab + s_cd) / 2, ((s_ab - s_cd) / 2, (d_ab + d_cd) / 2, (d_ab - d_cd) / 2)


def ihaar2d(ca: torch.Tensor, details: Subbands) -> torch.Tensor:
    """Inverse of :func:`haar2d` (for even sizes; crop odd originals yourself)."""
    ch, cv, cd = details
    a = (ca + ch + cv + cd) / 2
    b = (ca + ch - cv - cd) / 2
    c = (ca - ch + cv - cd) / 2
    d = (ca - ch - cv + cd) / 2
    top = torch.stack([a, b], -1).flatten(-2)
    bottom = torch.stack([c, d], -1).flatten(-2)
    return torch.stack([top, bottom], -2).flatten(-3, -2)


def haar_wavedec2(x: torch.Tensor, levels: int = 1) -> list:
    """Multi-level 2-D Haar decomposition, ordered as ``pywt.wavedec2``.

    Returns
    -------
    list ``[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]`` (coarsest first).
    """
    if levels < 1:
        raise ValueError("levels must be >= 1")
    details = []
    ca = x
    for _ in range(levels):
        ca, det = haar2d(ca)
        details.append(det)
    return [ca, *details[::-1]]
