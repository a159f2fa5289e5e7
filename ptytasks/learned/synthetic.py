"""Formula-driven synthetic training images: dead-leaves models (Baradad et al. 2021).

PINE (Yamada et al. 2024, J. Appl. Cryst.) trains its denoiser on two dead-leaves models
instead of real specimen images:

* ``"diverse"`` (DL-Diverse): occluding circles, triangles and rectangles with random
  rotation, aspect ratio and a scale-invariant size distribution (radius density
  ``~ r^-3`` between ``r_min`` and ``r_max``), each a uniform grey;
* ``"textured"`` (DL-Textured): the same shapes, each filled with a random texture
  (a sinusoidal grating, a linear ramp or a ``1/f^b`` noise patch) about a random grey.

Shapes are drawn front to back on a "free" mask until the canvas is covered (the same
image as dropping leaves back to front until nothing of the ground shows, with no wasted
draws). Once less than 5 % of the canvas is free, shape centres are drawn among the free
pixels so the last gaps close quickly. Images are 8-bit (``round(255 x) / 255``) in
``[0, 1]``; the denoising pairs add white Gaussian noise of ``sigma = 15/255`` (the
paper's setting).

Everything is seeded (``numpy.random.Generator``); :class:`DenoisingStream` yields
reproducible mini-batches of (noisy, clean) patches from a pool of images that it
optionally refreshes as it goes (streaming).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

MODELS: tuple[str, ...] = ("diverse", "textured")
SIGMA = 15.0 / 255.0
_FREE_SWITCH = 0.05  # free fraction below which centres are drawn among the free pixels


def _radius(rng: np.random.Generator, r_min: float, r_max: float) -> float:
    """Radius with density ``~ r^-3`` on ``[r_min, r_max]`` (scale-invariant leaves)."""
    a, b = r_min**-2, r_max**-2
    return float((a - rng.random() * (a - b)) ** -0.5)


def _noise_bank(rng: np.random.Generator, n: int = 4, size: int = 256) -> np.ndarray:
    """``n`` zero-mean, unit-peak ``1/f^b`` noise images (``b`` in 1..3) to crop textures from."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    f[0, 0] = 1.0
    out = np.empty((n, size, size))
    for i in range(n):
        spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape))
        spec *= f ** (-rng.uniform(1.0, 3.0) / 2)
        spec[0, 0] = 0
        img = np.fft.irfft2(spec, s=(size, size))
        out[i] = img / (np.abs(img).max() + 1e-12)
    return out


def _shape_mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, r: float) -> np.ndarray:
    """Mask of a random rotated circle, rectangle or triangle of size ``r`` at the origin."""
    kind = rng.integers(3)
    if kind == 0:
        return yy**2 + xx**2 <= r * r
    t = rng.uniform(0, 2 * math.pi)
    u = np.cos(t) * xx + np.sin(t) * yy
    v = -np.sin(t) * xx + np.cos(t) * yy
    if kind == 1:  # rectangle, aspect 1/3..3 with the same area scale
        asp = math.exp(rng.uniform(-math.log(3), math.log(3)))
        return (np.abs(u) <= r * math.sqrt(asp)) & (np.abs(v) <= r / math.sqrt(asp))
    # triangle: three half-planes at angles t, t + 120, t + 240, inscribed radius r / 2
    m = np.ones(yy.shape, bool)
    for k in range(3):
        a = 2 * math.pi * k / 3
        m &= (np.cos(a) * u + np.sin(a) * v) <= r / 2
    return m


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, bank: np.ndarray,
             grey: float) -> np.ndarray:
    """A random texture about ``grey`` on the box coordinates ``(yy, xx)``."""
    amp = rng.uniform(0.05, 0.5)
    kind = rng.integers(3)
    if kind == 0:  # grating
        f = rng.uniform(0.02, 0.3)
        t = rng.uniform(0, 2 * math.pi)
        tex = np.sin(2 * math.pi * f * (np.cos(t) * xx + np.sin(t) * yy) + rng.uniform(0, 6.3))
    elif kind == 1:  # linear ramp across the box
        t = rng.uniform(0, 2 * math.pi)
        g = np.cos(t) * xx + np.sin(t) * yy
        tex = g / (np.abs(g).max() + 1e-9)
    else:  # 1/f noise crop
        img = bank[rng.integers(len(bank))]
        h, w = yy.shape
        y0 = rng.integers(img.shape[0] - h + 1)
        x0 = rng.integers(img.shape[1] - w + 1)
        tex = img[y0:y0 + h, x0:x0 + w]
    return grey + amp * tex


def dead_leaves(
    rng: np.random.Generator,
    size: int = 128,
    model: str = "diverse",
    *,
    r_min: float = 4.0,
    r_max: float | None = None,
    bank: np.ndarray | None = None,
    max_shapes: int = 20000,
) -> np.ndarray:
    """One dead-leaves image, float32 ``(size, size)`` in ``[0, 1]``, 8-bit quantised.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Side, pixels (the paper: 128).
    model : {"diverse", "textured"}
        DL-Diverse (uniform grey shapes) or DL-Textured (textured shapes).
    r_min, r_max : float
        Shape radius range, pixels (default ``r_max = size / 2``).
    bank : array ``(n, s, s)``, optional
        Noise textures for ``"textured"`` (made from ``rng`` when absent; pass one to
        reuse it across images).
    max_shapes : int
        Safety cap on the number of shapes.
    """
    if model not in MODELS:
        raise ValueError(f"unknown dead-leaves model {model!r}; choose one of {MODELS}")
    r_max = float(r_max or size / 2)
    if model == "textured" and bank is None:
        bank = _noise_bank(rng, 2, 2 * size)
    img = np.zeros((size, size))
    free = np.ones((size, size), bool)
    n_free = size * size
    for _ in range(max_shapes):
        if n_free == 0:
            break
        r = _radius(rng, r_min, r_max)
        if n_free < _FREE_SWITCH * size * size:
            ys, xs = np.nonzero(free)
            k = rng.integers(len(ys))
            cy, cx = ys[k] + rng.uniform(-0.5, 0.5), xs[k] + rng.uniform(-0.5, 0.5)
        else:
            cy, cx = rng.uniform(-r, size + r), rng.uniform(-r, size + r)
        ext = 1.5 * r  # covers every rotated shape of size r
        y0, y1 = max(0, int(cy - ext)), min(size, int(math.ceil(cy + ext)) + 1)
        x0, x1 = max(0, int(cx - ext)), min(size, int(math.ceil(cx + ext)) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1)[:, None] - cy + np.zeros((1, x1 - x0))
        xx = np.arange(x0, x1)[None, :] - cx + np.zeros((y1 - y0, 1))
        m = _shape_mask(rng, yy, xx, r) & free[y0:y1, x0:x1]
        if not m.any():
            continue
        grey = rng.random()
        box = img[y0:y1, x0:x1]
        if model == "textured":
            box[m] = _texture(rng, yy, xx, bank, grey)[m]
        else:
            box[m] = grey
        free[y0:y1, x0:x1] &= ~m
        n_free -= int(m.sum())
    return (np.round(np.clip(img, 0, 1) * 255) / 255).astype(np.float32)


def synthetic_images(n: int, size: int = 128, *, seed: int = 0,
                     models: tuple[str, ...] = MODELS) -> np.ndarray:
    """``n`` clean images ``(n, size, size)`` float32, the models taken in turn.

    Image ``i`` depends only on ``(seed, i)``, so any prefix of a larger set is the same.
    """
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        out[i] = dead_leaves(rng, size, models[i % len(models)])
    return out


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``clean + sigma * N(0, 1)`` (float32, not clipped: the noise model stays Gaussian)."""
    return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)


class DenoisingStream:
    """Reproducible (noisy, clean) mini-batches of random patches, optionally streaming.

    A pool of ``pool`` images is generated from ``seed``; each batch takes ``batch``
    random ``patch x patch`` crops (random flips and 90-degree turns), adds Gaussian
    noise of ``sigma`` and, after every batch, replaces ``refresh`` pool images by fresh
    ones (0: a fixed dataset, as in the paper's 1000 images).

    Parameters
    ----------
    batch, patch : int
        Crops per batch and their side (``patch == size`` takes whole images).
    size : int
        Image side.
    pool : int
        Images held at once.
    refresh : int
        Pool images replaced after each batch.
    sigma : float
        Noise standard deviation on the ``[0, 1]`` scale (default 15/255).
    signed : bool
        Augment the value range: with probability 1/2 an image is negated, and a random
        offset in ``[-0.5, 0.5]`` is added, so the denoiser also sees the negative and
        shifted values that the real and imaginary parts of an object take.
    seed : int
    """

    def __init__(self, batch: int = 32, patch: int = 48, *, size: int = 128, pool: int = 64,
                 refresh: int = 2, sigma: float = SIGMA, signed: bool = True, seed: int = 0):
        if patch > size:
            raise ValueError(f"patch {patch} > image size {size}")
        self.batch, self.patch, self.size = int(batch), int(patch), int(size)
        self.refresh, self.sigma, self.signed = int(refresh), float(sigma), bool(signed)
        self.seed = int(seed)
        self._next = 0
        self.rng = np.random.default_rng([self.seed, 2**31 - 1])
        self.images = np.stack([self._new() for _ in range(int(pool))])

    def _new(self) -> np.ndarray:
        i = self._next
        self._next += 1
        rng = np.random.default_rng([self.seed, i])
        return dead_leaves(rng, self.size, MODELS[i % len(MODELS)])

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch ``(noisy, clean)``, each float32 ``(batch, 1, patch, patch)``."""
        rng, p = self.rng, self.patch
        idx = rng.integers(len(self.images), size=self.batch)
        ys = rng.integers(self.size - p + 1, size=self.batch)
        xs = rng.integers(self.size - p + 1, size=self.batch)
        clean = np.empty((self.batch, 1, p, p), np.float32)
        for b in range(self.batch):
            c = self.images[idx[b], ys[b]:ys[b] + p, xs[b]:xs[b] + p]
            c = np.rot90(c, rng.integers(4))
            if rng.random() < 0.5:
                c = c[:, ::-1]
            if self.signed:
                c = (c if rng.random() < 0.5 else -c) + rng.uniform(-0.5, 0.5)
            clean[b, 0] = c
        noisy = add_noise(clean, self.sigma, rng)
        for _ in range(min(self.refresh, len(self.images))):
            self.images[rng.integers(len(self.images))] = self._new()
        return noisy, clean

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.sample()
