"""Residual neural field: a complex field on a pixel grid as prior + complex MLP(hash(r)).

Paper Eqs. (2)-(3): ``O(r) = O_initial(r) + F_theta(r)``. The network output layer starts
small (``MLPConfig.out_init_scale = 1e-3``), so the field starts within ~1e-3 of the prior
and every parameter receives a gradient from the first step.

Non-residual ablation (``residual=False``): ``O(r) = offset + F_theta(r)``; the prior is not
used. The constant ``offset`` (default 1, a clear, flat object) only makes an amplitude-1
field representable at initialisation; it carries no information about the object. The
same (small) output initialisation is used in both modes, so the ablation differs only in
the prior.
"""

from __future__ import annotations

from dataclasses import fields as dc_fields

import torch
import torch.nn.functional as F
from torch import nn

from ptytasks.fields.activations import from_split, to_split
from ptytasks.fields.complex_layers import MLPConfig, build_mlp
from ptytasks.fields.hash_encoding import HashEncoding2D, HashEncodingConfig, pixel_to_unit

# Points per MLP chunk on CPU: a chunk's (129, n) activations stay in L2 and are reused from
# the heap; 16384 (8 MB per activation) page-faulted on every step (80 ms system time per
# RNF epoch) and ran ~1.2x slower per epoch (bench/bench_fields.py, bench/bench_rnf.py).
CPU_CHUNK = 2048


def _config(cls, cfg):
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    known = {f.name for f in dc_fields(cls)}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**cfg)


class ResidualField(nn.Module):
    """Complex field on an ``(H, W)`` pixel grid represented by a residual neural field.

    Parameters
    ----------
    shape : (H, W)
        Pixel grid of the field (object or probe array).
    prior : complex tensor ``(H, W)`` or ``(C, H, W)``, optional
        Physical prior ``O_initial`` (a buffer, not trained). ``None`` in residual mode
        means a constant ``offset`` prior.
    encoding : HashEncodingConfig or dict, optional
        Hash-encoding settings (paper defaults; ``level_policy="cap"``).
    mlp : MLPConfig or dict, optional
        MLP settings (paper defaults: 64 complex neurons, phasor w0=10, w=1).
    residual : bool
        ``True``: prior + MLP; ``False``: ``offset`` + MLP (ablation; prior unused).
    offset : complex
        Constant added in non-residual mode (and the prior when ``prior is None``).
    channels : int, optional
        Complex outputs per pixel (modes, slices); default from ``prior`` or 1.
    seed : int
        Seeds the encoding tables (``seed``) and MLP weights (``seed + 1``).
    chunk_size : int, "auto" or None
        Points per MLP chunk; ``"auto"``: ``CPU_CHUNK`` (2048) on CPU, whole grid on GPU.
    checkpoint : bool
        Recompute MLP activations in backward (low memory for large fields).
    """

    def __init__(
        self,
        shape: tuple[int, int],
        prior: torch.Tensor | None = None,
        *,
        encoding: HashEncodingConfig | dict | None = None,
        mlp: MLPConfig | dict | None = None,
        residual: bool = True,
        offset: complex = 1.0,
        channels: int | None = None,
        seed: int = 0,
        chunk_size: int | str | None = "auto",
        checkpoint: bool = False,
    ):
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]))
        if prior is not None:
            if tuple(prior.shape[-2:]) != self.shape or prior.dim() not in (2, 3):
                raise ValueError(f"prior shape {tuple(prior.shape)} does not match {self.shape}")
            if channels is not None and prior.dim() == 3 and prior.shape[0] != channels:
                raise ValueError("channels does not match prior.shape[0]")
            channels = prior.shape[0] if prior.dim() == 3 else (channels or 1)
        self.channels = int(channels or 1)
        self.squeeze = prior is None or prior.dim() == 2
        self.squeeze = self.squeeze and self.channels == 1
        self.residual = bool(residual)
        self.chunk_size = chunk_size
        self.checkpoint = bool(checkpoint)
        off = complex(offset)
        self.register_buffer("offset", torch.tensor([off.real, off.imag]))
        if self.residual and prior is not None:
            wide = {torch.float64: torch.complex128}.get(prior.dtype, torch.complex64)
            p = prior.to(wide) if not prior.is_complex() else prior
            p = p.reshape(self.channels, *self.shape)
            # the prior's own precision (a float64 prior is not rounded to float32 first)
            self.register_buffer("prior_split", to_split(p.detach()).contiguous())
        else:
            self.register_buffer("prior_split", None)
        self.encoding = HashEncoding2D(_config(HashEncodingConfig, encoding), self.shape, seed=seed)
        self.mlp = build_mlp(self.encoding.out_dim, self.channels, _config(MLPConfig, mlp),
                             seed=seed + 1)

    # ------------------------------------------------------------------ helpers
    @property
    def prior(self) -> torch.Tensor | None:
        """The prior as a complex tensor (``None`` when not used)."""
        return None if self.prior_split is None else self._finish(from_split(self.prior_split))

    def _chunk(self) -> int | None:
        if self.chunk_size == "auto":
            return None if self.offset.is_cuda else CPU_CHUNK
        return self.chunk_size

    def _finish(self, z: torch.Tensor) -> torch.Tensor:
        return z[0] if self.squeeze else z

    def _base(self, region: tuple[slice, slice] | None) -> torch.Tensor:
        """What the MLP output is added to, split layout broadcastable to ``(2, C, h, w)``."""
        if self.prior_split is None:
            return self.offset.view(2, 1, 1, 1)
        return self.prior_split if region is None else self.prior_split[:, :, region[0], region[1]]

    def _mlp(self, feats: torch.Tensor) -> torch.Tensor:
        """Features ``(D, P)`` -> split residual ``(2, C, P)``."""
        return self.mlp.forward_split(feats, self._chunk(), self.checkpoint)

    # ------------------------------------------------------------------ evaluation
    def field_and_residual(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Field and its network part on the full pixel grid, from one evaluation.

        Returns
        -------
        field, residual : complex tensors ``(H, W)`` (or ``(C, H, W)``)
            ``residual`` is the MLP output ``Delta O`` (the target of the wavelet prior).
        """
        return self.window(0, 0, *self.shape, return_residual=True)

    def forward(self, coords: torch.Tensor | None = None) -> torch.Tensor:
        """The complex field.

        Parameters
        ----------
        coords : tensor ``(..., 2)``, optional
            ``(y, x)`` pixel coordinates (sub-pixel allowed; clamped to the grid). The
            prior is bilinearly interpolated there. Omitted: the full pixel grid.

        Returns
        -------
        complex tensor ``(H, W)`` / ``(C, H, W)`` for the grid, ``(...)`` / ``(..., C)`` at
        ``coords``.
        """
        if coords is None:
            return self.window(0, 0, *self.shape)
        lead = coords.shape[:-1]
        pts = coords.reshape(-1, 2).to(self.offset.dtype)
        delta = self._mlp(self.encoding.encode_points(pixel_to_unit(pts, self.shape)))
        if self.prior_split is None:
            base = self.offset.view(2, 1, 1)
        else:
            # grid_sample wants (x, y) in [-1, 1] over the (H, W) grid (align_corners=True)
            scale = torch.tensor([max(1, self.shape[1] - 1), max(1, self.shape[0] - 1)],
                                 dtype=pts.dtype, device=pts.device)
            src = self.prior_split.reshape(1, 2 * self.channels, *self.shape)
            g = (pts.flip(-1) / scale * 2 - 1).view(1, 1, -1, 2).to(src.dtype)
            base = F.grid_sample(src, g, mode="bilinear", padding_mode="border",
                                 align_corners=True).view(2, self.channels, -1)
        z = from_split(base + delta)  # (C, P)
        return z.T.reshape(*lead) if self.squeeze else z.T.reshape(*lead, self.channels)

    def window(
        self, y0: int, x0: int, h: int, w: int, *, return_residual: bool = False,
        where: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The field on the integer pixel window ``[y0:y0+h, x0:x0+w]`` (fast grid path).

        Returns complex ``(h, w)`` (or ``(C, h, w)``); with ``return_residual`` also the
        MLP part alone. ``where`` (bool ``(h, w)``): evaluate the network only there (the
        prior alone elsewhere).
        """
        if not (0 <= y0 and 0 <= x0 and y0 + h <= self.shape[0] and x0 + w <= self.shape[1]):
            raise ValueError(f"window {(y0, x0, h, w)} outside the grid {self.shape}")
        dev, dt = self.offset.device, self.offset.dtype
        ys = pixel_to_unit(torch.arange(y0, y0 + h, device=dev, dtype=dt), self.shape)
        xs = pixel_to_unit(torch.arange(x0, x0 + w, device=dev, dtype=dt), self.shape)
        feats = self.encoding.encode_grid(ys, xs)
        feats = feats.reshape(feats.shape[0], -1)
        if where is None:
            delta = self._mlp(feats).view(2, self.channels, h, w)
        else:  # the network only at the pixels asked for; its part is zero elsewhere
            sel = where.reshape(-1).nonzero().squeeze(1)
            part = self._mlp(feats.index_select(1, sel))
            delta = part.new_zeros(2, self.channels, h * w).index_copy(2, sel, part)
            delta = delta.view(2, self.channels, h, w)
        base = self._base((slice(y0, y0 + h), slice(x0, x0 + w)))
        field = self._finish(from_split(base + delta))
        if return_residual:
            return field, self._finish(from_split(delta))
        return field

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, channels={self.channels}, residual={self.residual}, "
                f"chunk_size={self.chunk_size!r}, checkpoint={self.checkpoint}")
