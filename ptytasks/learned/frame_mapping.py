"""Mapping far-field frames of any size onto a single-shot network's grid, and back.

A single-shot network is trained on ``n x n`` frames. Data with ``N x N`` frames of the
same detector pitch ``dp``, wavelength ``lambda`` and distance ``z`` have the real-space
pixel ``dx = lambda z / (N dp)`` and the probe window ``N dx = lambda z / dp``: the window
is fixed by the pitch, the pixel by the number of detector pixels. The mapping here keeps
the window and changes the pixel:

* **crop** (``N > n``): keep the central ``n x n`` detector pixels (the extra ones are the
  highest scattering angles). The frames are then exactly those of the exit wave band-
  limited to those angles and sampled at ``dx' = s dx``, ``s = N / n``: network pixel ``j``
  sits at data pixel ``s j`` (both grids start at the window's corner; the DFT origin).
* **pad** (``N < n``): surround the frame with zeros (no signal beyond the measured
  angles): the exit wave band-limited to them, sampled at the finer ``dx' = s dx``,
  ``s = N / n < 1``.

Binning the detector ``k x k`` would instead keep ``dx`` and shrink the window to
``N dx / k``; a probe footprint of ``f N`` pixels then fills ``k f`` of the network's
window instead of ``f``. The simulator's probes are ``0.35 N`` pixels wide at every ``N``
(the window is the same in metres), so cropping (or padding) maps them to the ``0.35 n``
footprint the committed networks were trained with, and binning does not. The same crop
applied to the probe's far field gives the probe on the network's grid
(:meth:`FrameMapping.probe_to_network`): its ``sum |P'|^2`` is the photons that land on the
kept pixels, the flux the network input is normalised by. The network's ``M x M`` output
is interpolated back to the data's pixels (:meth:`FrameMapping.patches_to_data`), so the
positions, pixel size and object shape of the result stay those of the data.

No resampling changes the probe itself: a zone plate whose numerical aperture fills a
fixed share of the detector at every ``N`` (the simulator's) has, at ``N = 64``, twice the
aperture and half the defocus of the ``N = 32`` one for the same footprint, a Fresnel
number twice as large. The crop shows the network a bright-field disc that overfills its
frame; see :func:`probe_match` and ``docs/learned.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ptytasks.physics.fft import fft2c, ifft2c


def _centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size x size`` of the last two axes (zero frequency stays at ``size // 2``),
    cropped or zero-padded."""
    big = x.shape[-1]
    if size == big:
        return x
    if size < big:
        a = big // 2 - size // 2
        return x[..., a:a + size, a:a + size]
    out = x.new_zeros((*x.shape[:-2], size, size))
    a = size // 2 - big // 2
    out[..., a:a + big, a:a + big] = x
    return out


@dataclass(frozen=True)
class FrameMapping:
    """Data frames of side ``data_size`` onto a network trained on ``net_size`` frames.

    Attributes
    ----------
    data_size, net_size : int
        ``N`` and ``n``, detector pixels a side.
    """

    data_size: int
    net_size: int

    @property
    def scale(self) -> float:
        """``s = N / n``: data pixels per network pixel (the network pixel is ``s dx``)."""
        return self.data_size / self.net_size

    @property
    def mode(self) -> str:
        """``"none"``, ``"crop"`` (``N > n``) or ``"pad"`` (``N < n``)."""
        if self.data_size == self.net_size:
            return "none"
        return "crop" if self.data_size > self.net_size else "pad"

    def frames(self, frames) -> torch.Tensor:
        """Frames ``(k, N, N)`` (counts) on the network's ``(k, n, n)`` detector."""
        x = frames if torch.is_tensor(frames) else torch.from_numpy(np.asarray(frames))
        return _centre(x, self.net_size)

    def probe_to_network(self, probe: np.ndarray) -> np.ndarray:
        """Probe ``(N, N)`` on the network's grid: its far field cropped (padded) to ``n``.

        Unitary FFTs, so ``sum |P'|^2`` is the photons on the kept detector pixels.
        """
        p = torch.as_tensor(np.asarray(probe, np.complex64))
        if self.mode == "none":
            return p.numpy()
        return ifft2c(_centre(fft2c(p), self.net_size)).numpy().astype(np.complex64)

    def probe_to_data(self, probe: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`probe_to_network` (exact for probes band-limited to ``n``)."""
        p = torch.as_tensor(np.asarray(probe, np.complex64))
        if self.mode == "none":
            return p.numpy()
        return ifft2c(_centre(fft2c(p), self.data_size)).numpy().astype(np.complex64)

    def patch_window(self, crop: slice) -> tuple[int, int]:
        """Data-grid window ``(start, side)`` covering the network's output rows ``crop``.

        Network pixel ``j`` covers data coordinates ``s (j - 1/2) .. s (j + 1/2)``; the
        patch keeps ``round(s M)`` data pixels centred on the output's centre.
        """
        s, m = self.scale, crop.stop - crop.start
        if self.mode == "none":
            return crop.start, m
        side = max(1, int(round(s * m)))
        centre = s * (crop.start + (m - 1) / 2)
        return int(np.floor(centre - (side - 1) / 2 + 0.5)), side

    def patches_to_data(self, patches: torch.Tensor, crop: slice) -> tuple[torch.Tensor, int]:
        """Network output ``(k, M, M)`` (complex) on the data grid, and its window offset.

        Bilinear interpolation of the complex values (no phase wrapping) at network
        coordinate ``x / s`` for data pixel ``x`` of the window; pixels past the outermost
        network samples take the edge value. Identity when ``N == n``.
        """
        start, side = self.patch_window(crop)
        if self.mode == "none":
            return patches, start
        m = patches.shape[-1]
        u = (torch.arange(side, dtype=torch.float64) + start) / self.scale - crop.start
        g = (2 * u / max(m - 1, 1) - 1).to(torch.float32)  # align_corners=True coordinates
        gy, gx = torch.meshgrid(g, g, indexing="ij")
        grid = torch.stack([gx, gy], -1)[None].expand(patches.shape[0], -1, -1, -1)
        ri = torch.stack([patches.real, patches.imag], 1).to(torch.float32)
        out = F.grid_sample(ri, grid, mode="bilinear", padding_mode="border",
                            align_corners=True)  # fmt: skip
        return torch.complex(out[:, 0], out[:, 1]), start


def probe_match(probe_net: np.ndarray, trained: np.ndarray) -> float:
    """Similarity of two probes' far-field amplitudes, ``<|FP|, |FQ|> / (||FP|| ||FQ||)``.

    1 for the same far-field intensity pattern, whatever its phase; so it also rates a
    mean-pattern probe (flat phase, the square root of the mean frame). Below ~0.95 the
    network sees a bright-field disc it was not trained on. It rates the aperture only: a
    defocus changes the far field's phase, not its amplitude, so a zone plate defocused to
    another footprint still scores 1.
    """
    a = fft2c(torch.as_tensor(np.asarray(probe_net, np.complex64))).abs().double()
    b = fft2c(torch.as_tensor(np.asarray(trained, np.complex64))).abs().double()
    den = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    return float((a * b).sum()) / den if den > 0 else 0.0


def footprint_ratio(probe_net: np.ndarray, trained: np.ndarray) -> float:
    """RMS radius of ``|P|^2`` of the data's probe over the training probe's (1: the same
    footprint). What :func:`probe_match` cannot see: a defocus that changes the footprint
    leaves the far-field amplitude alone."""

    def rms_radius(p) -> float:
        w = np.abs(np.asarray(p, np.complex128)) ** 2
        total = w.sum()
        if total <= 0:
            return 0.0
        yy, xx = np.indices(w.shape, dtype=np.float64)
        cy, cx = (w * yy).sum() / total, (w * xx).sum() / total
        return float(np.sqrt((w * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / total))

    ref = rms_radius(trained)
    return rms_radius(probe_net) / ref if ref > 0 else float("inf")
