"""Multiresolution hash encoding in 2-D (instant-NGP, Müller et al. 2022), pure PyTorch.

A coordinate ``r = (y, x)`` in unit coordinates is mapped to the concatenation over levels
``l`` of the bilinearly interpolated feature vectors of the level's grid vertices
(paper Eq. 5). Level ``l`` has resolution ``N_l = floor(base * scale**l)`` cells per unit,
i.e. ``(N_l + 1)**2`` vertices.

Speed (all measured in ``bench/bench_fields.py``):

* **Dense levels.** A level whose ``(N_l + 1)**2`` vertices fit in the table size is stored
  as a plain ``(F, N_l + 1, N_l + 1)`` grid (no hashing, no collisions, exactly as
  instant-NGP does) and sampled with ``grid_sample`` (one fused kernel, forward and
  backward) or, on a full pixel grid and small ``N_l``, with two tiny interpolation-matrix
  products.
* **Hashed levels** use the instant-NGP spatial hash ``(x * 1) XOR (y * 2654435761) mod T``
  with one gather over all four corners. On a tensor-product grid the hash is separable, so
  the corner indices are built by broadcasting two 1-D vectors, not per point.
* **Level policy.** With ``level_policy="cap"`` (default) levels finer than the field's
  pixel grid are dropped and replaced by one level at exactly the pixel pitch
  (``N = max(H, W) - 1``, vertex ``i`` on pixel ``i``). Finer levels add no detail that
  pixel samples can show (at the pixel pitch each pixel owns its own vertex features while
  that level is dense, ``max(H, W) <= 724`` at ``T = 2**19``; larger fields hash it, with
  collisions), yet at the paper's defaults they are the six hashed levels and dominate the
  cost (at 512^2: 6 of 16 levels, over half the encoding time). The capped encoding has
  fewer features (20 instead of 32 at 512^2, 16 at 256^2). What is lost is sub-pixel
  structure *between* pixel centres, which a field sampled on its pixel grid (sub-pixel
  probe shifts are applied to the pixel array) never shows. ``level_policy="paper"``
  keeps all ``n_levels`` levels as published.

Coordinates: pixel ``(i, j)`` of an ``(H, W)`` field sits at unit coordinate
``(i, j) / (max(H, W) - 1)``, so the longer axis spans ``[0, 1]`` and cells stay square in
pixels (see :func:`pixel_to_unit`). Coordinates outside ``[0, 1]`` are clamped to the edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

# instant-NGP primes: the first axis (x here) uses 1 so neighbouring cells along x hash to
# neighbouring table rows (cache friendly); y uses the large prime.
PRIME_X = 1
PRIME_Y = 2654435761

# Dense levels with at most this many vertices per axis are sampled on a full grid by two
# interpolation-matrix products (cost ~ N * (H + W) per feature) instead of grid_sample.
_MATMUL_MAX_VERTICES = 128


@dataclass(frozen=True)
class HashEncodingConfig:
    """Hash-encoding hyper-parameters; defaults are the paper's (Methods).

    Attributes
    ----------
    n_levels : int
        Number of resolution levels ``L`` (16).
    n_features : int
        Features per level ``F`` (2).
    log2_table_size : int
        ``log2`` of the per-level table size ``T`` (19).
    base_resolution : int
        Coarsest resolution ``N_min`` in cells per unit length (16).
    per_level_scale : float
        Growth factor ``b`` between levels (1.5).
    level_policy : {"cap", "paper"}
        ``"cap"``: drop levels finer than the field's pixel grid and add one level at the
        pixel pitch (needs the grid shape); ``"paper"``: all ``n_levels`` levels.
    init_scale : float
        Tables start uniform in ``[-init_scale, init_scale]`` (instant-NGP: 1e-4).
    """

    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.5
    level_policy: str = "cap"
    init_scale: float = 1e-4


def level_resolutions(
    config: HashEncodingConfig, grid_shape: tuple[int, int] | None = None
) -> list[int]:
    """Cells per unit length of each level.

    Parameters
    ----------
    config : HashEncodingConfig
    grid_shape : (H, W) or None
        Pixel grid of the field; needed by ``level_policy="cap"`` (ignored when ``None``).

    Returns
    -------
    list of int, coarse to fine.
    """
    res = [
        int(math.floor(config.base_resolution * config.per_level_scale**level))
        for level in range(config.n_levels)
    ]
    if config.level_policy not in ("cap", "paper"):
        raise ValueError(f"level_policy must be 'cap' or 'paper', not {config.level_policy!r}")
    if config.level_policy == "paper" or grid_shape is None:
        return res
    pitch = max(1, max(grid_shape) - 1)
    kept = [r for r in res if r < pitch]
    if len(kept) < len(res):
        kept.append(pitch)
    return kept


def pixel_to_unit(coords_px: torch.Tensor, grid_shape: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates ``(..., 2)`` (y, x) of an ``(H, W)`` field to unit coordinates."""
    return coords_px / float(max(1, max(grid_shape) - 1))


def _corner(u: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower vertex index (long) and fractional weight of unit coordinates at resolution n."""
    pos = u.clamp(0.0, 1.0) * n
    i0 = pos.detach().floor().clamp_(max=n - 1)
    return i0.long(), pos - i0


def _interp_matrices(u: torch.Tensor, ns: torch.Tensor, n_max: int) -> torch.Tensor:
    """Linear-interpolation matrices of several resolutions at once.

    Parameters
    ----------
    u : tensor ``(P,)``
        Unit coordinates along one axis.
    ns : tensor ``(L,)``
        Cells per unit of each level (whole numbers, the table's dtype).
    n_max : int
        ``max(ns)``.

    Returns
    -------
    tensor ``(L, n_max + 1, P)``: ``values @ R[l, :n_l + 1]`` samples level ``l`` at ``u``
    (rows past ``n_l`` are zero).

    Built from the hat function ``max(0, 1 - |i - u n|)``, the same weights as
    :func:`_corner`'s lower vertex and fraction (bit for bit), in a few element-wise
    passes for all levels: a scatter (``index_put_``) per level took several kernels each
    on CUDA (a sort) and was most of the encoding's kernel launches there.
    """
    pos = u.clamp(0.0, 1.0)[None, :] * ns[:, None]
    i = torch.arange(n_max + 1, device=u.device, dtype=u.dtype)
    return (1 - (i[None, :, None] - pos[:, None, :]).abs()).clamp_(min=0)


class HashEncoding2D(nn.Module):
    """Multiresolution hash encoding of 2-D unit coordinates.

    Parameters
    ----------
    config : HashEncodingConfig, optional
        Hyper-parameters (paper defaults when omitted).
    grid_shape : (H, W), optional
        Pixel grid of the encoded field: needed by ``level_policy="cap"``.
    seed : int, optional
        Seeds the table initialisation with a private generator (the global RNG is left
        alone); ``None`` uses the global RNG.
    **overrides
        Fields of :class:`HashEncodingConfig` to replace, e.g. ``level_policy="paper"``.

    Attributes
    ----------
    resolutions : list of int
        Cells per unit length of each level.
    dense : list of bool
        Whether each level is a dense grid (else hashed).
    out_dim : int
        Feature length ``len(resolutions) * n_features``.
    """

    def __init__(
        self,
        config: HashEncodingConfig | None = None,
        grid_shape: tuple[int, int] | None = None,
        *,
        seed: int | None = None,
        **overrides,
    ):
        super().__init__()
        cfg = replace(config or HashEncodingConfig(), **overrides)
        self.config = cfg
        self.grid_shape = None if grid_shape is None else (int(grid_shape[0]), int(grid_shape[1]))
        self.resolutions = level_resolutions(cfg, self.grid_shape)
        self.table_size = 2**cfg.log2_table_size
        self.dense = [(n + 1) ** 2 <= self.table_size for n in self.resolutions]
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        f, s = cfg.n_features, cfg.init_scale
        tables = []
        for n, dense in zip(self.resolutions, self.dense, strict=True):
            shape = (f, n + 1, n + 1) if dense else (f, self.table_size)
            tables.append(nn.Parameter((torch.rand(shape, generator=gen) * 2 - 1) * s))
        self.tables = nn.ParameterList(tables)
        # levels sampled on a grid by interpolation-matrix products (see encode_grid)
        self._by_matmul = [dense and n + 1 <= _MATMUL_MAX_VERTICES
                           for n, dense in zip(self.resolutions, self.dense, strict=True)]
        small = [n for n, m in zip(self.resolutions, self._by_matmul, strict=True) if m]
        self._small_max = max(small, default=0)
        self.register_buffer("_small_res", torch.tensor(small, dtype=torch.float32),
                             persistent=False)

    @property
    def out_dim(self) -> int:
        return len(self.resolutions) * self.config.n_features

    def extra_repr(self) -> str:
        kinds = "".join("d" if d else "h" for d in self.dense)
        return f"resolutions={self.resolutions}, kinds={kinds}, out_dim={self.out_dim}"

    # ------------------------------------------------------------------ arbitrary points
    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode unit coordinates.

        Parameters
        ----------
        coords : tensor ``(..., 2)``
            ``(y, x)`` unit coordinates (see :func:`pixel_to_unit`).

        Returns
        -------
        tensor ``(..., out_dim)``, level-major (level 0 features first).
        """
        lead = coords.shape[:-1]
        return self.encode_points(coords.reshape(-1, 2)).T.reshape(*lead, self.out_dim)

    def encode_points(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode ``(P, 2)`` unit coordinates to channels-first features ``(out_dim, P)``."""
        coords = coords.to(self.tables[0].dtype)
        y, x = coords[:, 0], coords[:, 1]
        # grid_sample wants (x, y) in [-1, 1]; align_corners=True puts -1/+1 on the end
        # vertices, which matches vertex i at unit coordinate i / N.
        gs_grid = torch.stack([x, y], -1).clamp(0.0, 1.0).mul(2).sub(1).view(1, 1, -1, 2)
        outs = []
        for n, dense, table in zip(self.resolutions, self.dense, self.tables, strict=True):
            if dense:
                out = F.grid_sample(
                    table[None], gs_grid, mode="bilinear", padding_mode="border",
                    align_corners=True,
                )
                outs.append(out[0, :, 0])
            else:
                y0, wy = _corner(y, n)
                x0, wx = _corner(x, n)
                outs.append(self._hashed_lerp(table, y0, x0, wy, wx, grid=False))
        return torch.cat(outs, 0)

    # ------------------------------------------------------------------ tensor-product grid
    def encode_grid(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Encode the tensor-product grid of 1-D unit coordinates (fast path).

        Parameters
        ----------
        ys : tensor ``(H,)``
            Unit y coordinates of the rows.
        xs : tensor ``(W,)``
            Unit x coordinates of the columns.

        Returns
        -------
        tensor ``(out_dim, H, W)``, channels first.
        """
        dt = self.tables[0].dtype
        ys, xs = ys.to(dt), xs.to(dt)
        gs_grid = None
        outs = []
        if self._small_res.numel():
            rys = _interp_matrices(ys, self._small_res.to(dt), self._small_max)
            rxs = _interp_matrices(xs, self._small_res.to(dt), self._small_max)
        j = 0
        for n, dense, table, by_matmul in zip(self.resolutions, self.dense, self.tables,
                                              self._by_matmul, strict=True):
            if by_matmul:
                # separable bilinear interpolation: R_y^T @ G @ R_x (both tiny and dense).
                ry, rx = rys[j, :n + 1], rxs[j, :n + 1]
                outs.append(ry.T @ table @ rx)
                j += 1
            elif dense:
                if gs_grid is None:
                    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
                    gs_grid = torch.stack([gx, gy], -1).clamp(0.0, 1.0).mul(2).sub(1)[None]
                out = F.grid_sample(
                    table[None], gs_grid, mode="bilinear", padding_mode="border",
                    align_corners=True,
                )
                outs.append(out[0])
            else:
                y0, wy = _corner(ys, n)
                x0, wx = _corner(xs, n)
                outs.append(self._hashed_lerp(table, y0, x0, wy, wx, grid=True))
        return torch.cat(outs, 0)

    def encode_pixels(self, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """Encode every pixel of an ``(H, W)`` field (default: ``grid_shape``): ``(D, H, W)``."""
        shape = shape or self.grid_shape
        if shape is None:
            raise ValueError("no shape given and the encoding has no grid_shape")
        dev, dt = self.tables[0].device, self.tables[0].dtype
        ys = pixel_to_unit(torch.arange(shape[0], device=dev, dtype=dt), shape)
        xs = pixel_to_unit(torch.arange(shape[1], device=dev, dtype=dt), shape)
        return self.encode_grid(ys, xs)

    # ------------------------------------------------------------------ hashing
    def _hashed_lerp(self, table, y0, x0, wy, wx, *, grid: bool) -> torch.Tensor:
        """Bilinear interpolation of a hashed table at corners ``(y0, x0)``.

        With ``grid=True`` the inputs are 1-D row/column vectors and the result is
        ``(F, H, W)``; otherwise they are per point and the result is ``(F, P)``.
        """
        mask = self.table_size - 1
        # hash(y, x) mod T == (hash_y mod T) XOR (hash_x mod T) since T is a power of two,
        # so the 1-D parts are hashed once per row/column. Indices stay int64: CPU
        # index_add_ with int32 indices takes a ~20x slower path (measured).
        hy = [(y0 + d) * PRIME_Y & mask for d in (0, 1)]
        hx = [(x0 + d) * PRIME_X & mask for d in (0, 1)]
        wy, wx = wy.detach(), wx.detach()
        wys, wxs = (1 - wy, wy), (1 - wx, wx)
        if grid:
            hy, wys = [h[:, None] for h in hy], [w[:, None] for w in wys]
        shape = torch.broadcast_shapes(hy[0].shape, hx[0].shape)
        # corner order (y0x0, y0x1, y1x0, y1x1); written in place (no stack copies)
        idx = torch.empty((4, *shape), dtype=torch.long, device=table.device)
        w = torch.empty((4, *shape), dtype=table.dtype, device=table.device)
        for c, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            torch.bitwise_xor(hy[a], hx[b], out=idx[c])
            torch.mul(wys[a], wxs[b], out=w[c])
        out = _HashGather.apply(table, idx.view(4, -1), w.view(4, -1))
        return out.view(table.shape[0], *shape)


class _HashGather(torch.autograd.Function):
    """``out[f, p] = sum_c w[c, p] * table[f, idx[c, p]]`` with a scatter-add backward.

    Written by hand because autograd through ``index_select`` + per-corner ``select`` +
    ``lerp`` materialises a zero-filled full-size gradient per corner (measured 3-4x
    slower for the paper's levels at 512^2). The weights are treated as constants: no
    gradient reaches the coordinates.
    """

    @staticmethod
    def forward(ctx, table, idx, w):
        f = table.shape[0]
        vals = table.index_select(1, idx.reshape(-1)).view(f, *idx.shape)
        ctx.save_for_backward(idx, w)
        ctx.table_shape = table.shape
        out = vals[:, 0] * w[0]
        for c in (1, 2, 3):
            out.addcmul_(vals[:, c], w[c])
        return out

    @staticmethod
    def backward(ctx, grad):
        idx, w = ctx.saved_tensors
        gvals = (grad[:, None, :] * w).reshape(grad.shape[0], -1)
        gtable = grad.new_zeros(ctx.table_shape).index_add_(1, idx.reshape(-1), gvals)
        return gtable, None, None
