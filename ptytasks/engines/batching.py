"""Mini-batch orders for the gradient engines: random, or spatially compact.

A gradient step of the RNF engine evaluates the object field on the bounding box of its
batch's windows (``RNFOptions.eval_region``). With frames drawn at random, 16 windows of
a scan span nearly the whole object, so every step pays for the whole field. Compact
batches group frames that lie near each other, so a step's box -- and the field's cost
-- shrinks to a few windows' area (pty-chi offers the same choice, ``BatchingModes``,
for its own reasons).

The grouping changes every epoch (a random strip direction and offset), and the batches
are visited in random order, so no frame is always paired with the same neighbours and
no region is always updated first.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BATCHING", "batches", "compact_batches"]

BATCHING = ("random", "compact")


def compact_batches(
    positions: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Split frames into spatially compact batches of ``batch_size`` (the last may be short).

    The scan is cut into ``s ~ sqrt(n / batch_size)`` parallel strips of equal frame
    counts across a random direction (with a random offset of the first cut), the frames
    are ordered along each strip, alternating direction from strip to strip (a
    boustrophedon, so a batch that spans two strips takes their adjacent ends), and
    consecutive runs of ``batch_size`` frames form the batches, visited in random order.

    Parameters
    ----------
    positions : tensor ``(n, 2)``
        Scan positions, pixels (any consistent unit).
    batch_size : int
        Frames per batch.
    generator : torch.Generator
        CPU generator: the direction, offset and visiting order.

    Returns
    -------
    list of long tensors of frame indices, on ``positions.device``; together a
    permutation of ``range(n)``.
    """
    n = positions.shape[0]
    bs = max(1, int(batch_size))
    k = math.ceil(n / bs)
    if k <= 1:
        return [torch.randperm(n, generator=generator).to(positions.device)]
    pos = positions.detach().double().cpu()
    theta = float(torch.rand((), generator=generator, dtype=torch.float64)) * math.pi
    d = torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.float64)
    u, v = pos @ d, pos @ torch.stack([-d[1], d[0]])
    strips = max(1, round(math.sqrt(k)))
    per = n / strips
    shift = float(torch.rand((), generator=generator, dtype=torch.float64)) * per
    # strip label from the frame's rank across the strips (equal counts); the random
    # shift moves the cuts so the grouping differs from epoch to epoch
    rank = torch.empty(n, dtype=torch.float64)
    rank[torch.argsort(u, stable=True)] = torch.arange(n, dtype=torch.float64)
    strip = torch.div(rank + shift, per, rounding_mode="floor").clamp_(max=strips)
    along = torch.where(strip.remainder(2) == 0, v, -v)
    # order by strip, then along the strip: one lexicographic key
    span = float(along.max() - along.min()) + 1.0
    key = strip * span + (along - along.min())
    order = torch.argsort(key, stable=True)
    groups = list(order.split(bs))
    visit = torch.randperm(len(groups), generator=generator).tolist()
    return [groups[i].to(positions.device) for i in visit]


def batches(
    mode: str, positions: torch.Tensor | None, n: int, batch_size: int,
    generator: torch.Generator, device=None,
) -> list[torch.Tensor]:
    """One epoch's batches: ``"random"`` (a random permutation cut in runs) or ``"compact"``.

    ``positions`` may be ``None`` (no scan, e.g. Fourier ptychography): the order is
    random then. ``device``: where the index tensors go (default ``positions.device``).
    """
    if mode not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, not {mode!r}")
    if mode == "compact" and positions is not None:
        out = compact_batches(positions, batch_size, generator)
        return out if device is None else [b.to(device) for b in out]
    order = torch.randperm(n, generator=generator)
    if device is not None:
        order = order.to(device)
    return list(order.split(max(1, int(batch_size))))
