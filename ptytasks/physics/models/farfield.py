"""Far-field (Fraunhofer) ptychography: ``I = |fft2c(P * O[p_i + r])|^2``.

Positions follow ``docs/conventions.md``: ``(y, x)`` top-left corner of the probe window in
object pixels; detector frames are centred (zero frequency at ``(N//2, N//2)``).
"""

from __future__ import annotations

import torch
from torch import nn

from ptytasks.physics.fft import fft2c, ifft2c
from ptytasks.physics.models.base import ForwardModel
from ptytasks.physics.shifts import extract_patches


class FarField(ForwardModel):
    """Far-field ptychography with optional incoherent probe modes.

    Parameters
    ----------
    positions : array-like ``(n, 2)``
        Probe-window corners ``(y, x)`` in object pixels (sub-pixel allowed). Stored as the
        ``positions`` parameter (frozen until ``learnable("positions")``).
    object_shape : (int, int)
        Object array shape the positions refer to.
    probe_shape : (int, int)
        Probe window (= detector frame) shape.
    dtype : torch.dtype
        Real dtype of the physical parameters (``float32``; ``float64`` for gradcheck).

    Notes
    -----
    ``exit_waves`` accepts a probe ``(ny, nx)`` -> exit ``(b, ny, nx)`` or probe modes
    ``(M, ny, nx)`` -> exit ``(b, M, ny, nx)``; :meth:`intensity` sums the modes.
    """

    modality = "farfield"

    def __init__(
        self,
        positions,
        object_shape: tuple[int, int],
        probe_shape: tuple[int, int],
        *,
        dtype: torch.dtype = torch.float32,
    ):
        pos = torch.as_tensor(positions, dtype=dtype)
        if pos.dim() != 2 or pos.shape[1] != 2:
            raise ValueError(f"positions must have shape (n, 2); got {tuple(pos.shape)}")
        super().__init__(pos.shape[0])
        self.object_shape = tuple(int(s) for s in object_shape)
        self.probe_shape = tuple(int(s) for s in probe_shape)
        self.positions = nn.Parameter(pos, requires_grad=False)
        self.intensity_factors.data = self.intensity_factors.data.to(dtype)

    def exit_waves(self, obj: torch.Tensor, probe: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        patches = extract_patches(obj, self.positions[idx], tuple(probe.shape[-2:]))
        return self.exit_from_patches(probe, patches)

    def to_detector(self, exit_wave: torch.Tensor, idx: torch.Tensor, **fields) -> torch.Tensor:
        return fft2c(exit_wave)

    def from_detector(self, wave: torch.Tensor, idx: torch.Tensor, **fields) -> torch.Tensor:
        return ifft2c(wave)
