"""Which object pixels and probe windows an RNF step touches (the trainer's geometry).

:class:`WindowGeometry` is a mixin of the trainer's setup (``rnf._Setup``): it reads the
run's ``data``, ``opts``, ``model``, ``window``, ``device``, ``corners_host`` (integer
window corners on the host when the positions are frozen, else ``None``), ``affine`` and
``pos0`` (a learned affine map of the start positions).
"""

from __future__ import annotations

import torch

__all__ = ["WindowGeometry"]


class WindowGeometry:
    """Window corners, the object box a step evaluates and the pixels under its windows."""

    def corners(self, idx: torch.Tensor, idx_host: torch.Tensor | None = None) -> torch.Tensor:
        """Integer window corners ``(n, 2)`` of frames ``idx``, on the host (from
        ``corners_host`` at ``idx_host`` when the positions are frozen, else one read)."""
        if self.corners_host is not None and idx_host is not None:
            return self.corners_host[idx_host]
        return torch.floor(self.model.positions[idx].detach()).long().cpu()

    def object_box(self, idx: torch.Tensor,
                   idx_host: torch.Tensor | None = None) -> tuple[int, int, int, int]:
        """``(y0, x0, h, w)``: the object pixels a step on frames ``idx`` evaluates.

        The bounding box of the frames' windows, or the whole object where that is not
        much smaller (``eval_region``, ``bbox_fraction``). ``idx_host``: ``idx`` on the
        host (saves a device read).
        """
        ny, nx = self.data.object_shape
        if self.opts.eval_region == "full":
            return 0, 0, ny, nx
        corners = self.corners(idx, idx_host)
        y0, x0 = corners.min(0).values.tolist()
        y1, x1 = corners.max(0).values.tolist()
        h, w = y1 + self.window[0] - y0, x1 + self.window[1] - x0
        if self.opts.eval_region == "auto" and h * w > self.opts.bbox_fraction * ny * nx:
            return 0, 0, ny, nx
        return y0, x0, h, w

    def under_windows(self, idx, y0: int, x0: int, h: int, w: int,
                      idx_host: torch.Tensor | None = None) -> torch.Tensor:
        """Bool ``(h, w)``: pixels of the box under a window of frames ``idx``, widened to
        whole blocks of the wavelet term (``2**wavelet_levels`` px from the box's corner),
        so that each Haar block is evaluated whole or not at all."""
        b = 2 ** max(int(self.opts.wavelet_levels), 0)
        corners = self.corners(idx, idx_host)
        m = torch.zeros(-(-h // b) * b, -(-w // b) * b, dtype=torch.bool)
        for y, x in (corners - torch.tensor([y0, x0])).tolist():
            m[max(y, 0):y + self.window[0], max(x, 0):x + self.window[1]] = True
        m = m.view(m.shape[0] // b, b, m.shape[1] // b, b).any(3).any(1)
        m = m.repeat_interleave(b, 0).repeat_interleave(b, 1)[:h, :w]
        return m.to(self.device)

    def scan_positions(self, idx: torch.Tensor) -> torch.Tensor:
        """Window corners ``(n, 2)`` of frames ``idx``, px: the model's, or under a learned
        affine map of the scan (``learn_positions="affine"``) the map of the start positions,
        kept on the canvas (differentiable in the map)."""
        if self.affine is None:
            return self.model.positions[idx]
        p0 = self.pos0[idx]
        c = self.pos0.mean(0)
        return self.on_canvas(
            c + (p0 - c) @ (torch.eye(2, dtype=p0.dtype, device=p0.device) + self.affine).T)

    def on_canvas(self, p: torch.Tensor) -> torch.Tensor:
        """Window corners ``p`` (px) clamped so every window lies inside the object."""
        upper = torch.tensor([self.data.object_shape[0] - self.window[0],
                              self.data.object_shape[1] - self.window[1]],
                             dtype=p.dtype, device=p.device)
        return torch.minimum(torch.maximum(p, torch.zeros_like(upper)), upper)
