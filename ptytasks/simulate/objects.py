"""Test objects from bundled or procedural images; nothing is downloaded.

Every image kind returns a float64 array in ``[0, 1]`` of the requested shape;
:func:`complex_object` maps one image to the amplitude and another (or the same) to the
phase of a transmission function ``O = a exp(i phi)`` (``docs/conventions.md``: a positive
phase shift is ``+phi``).

Kinds
-----
Bundled with scikit-image (no network): ``camera``, ``astronaut`` (grey), ``coins``,
``moon``, ``brick``, ``grass``, ``gravel``, ``cell``, ``text``, ``page``, ``clock``,
``chelsea`` (grey), ``coffee`` (grey), ``phantom`` (Shepp-Logan).
Procedural (drawn here, seeded where random): ``usaf`` (bar target), ``siemens`` (Siemens
star), ``dead_leaves`` (occluding random discs), ``blobs`` (binary blobs, smoothed),
``layout`` (two-layer Manhattan wiring with vias, an integrated-circuit-like sample),
``lattice`` (atomic columns on a square lattice with vacancies), ``flat`` (constant 1).
"""

from __future__ import annotations

import math

import numpy as np

BUNDLED: tuple[str, ...] = (
    "camera", "astronaut", "coins", "moon", "brick", "grass", "gravel", "cell", "text",
    "page", "clock", "chelsea", "coffee", "phantom",
)
PROCEDURAL: tuple[str, ...] = (
    "usaf", "siemens", "dead_leaves", "blobs", "layout", "lattice", "flat",
)
KINDS: tuple[str, ...] = BUNDLED + PROCEDURAL
#: Kinds whose drawing depends on the seed (the others are one fixed picture).
SEEDED: tuple[str, ...] = ("dead_leaves", "blobs", "layout", "lattice")

# Default image for the amplitude when ``kind`` drives the phase: a different picture, so a
# reconstruction that leaks phase into amplitude (or back) shows it.
_AMPLITUDE_PARTNER = {
    "camera": "moon", "astronaut": "camera", "coins": "camera", "moon": "camera",
    "brick": "gravel", "grass": "gravel", "gravel": "brick", "cell": "coins",
    "text": "camera", "page": "camera", "clock": "camera", "chelsea": "camera",
    "coffee": "camera", "phantom": "camera",
}


def _bundled(kind: str) -> np.ndarray:
    """A bundled scikit-image picture as float64 grey in [0, 1] (imported lazily)."""
    from skimage import color, data

    if kind == "phantom":
        img = data.shepp_logan_phantom()
    else:
        img = getattr(data, kind)()
    img = np.asarray(img)
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    img = img.astype(np.float64)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _fit(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``img`` to the aspect ratio of ``shape``, then resample to ``shape``.

    Cropping first keeps the picture undistorted; anti-aliasing avoids moire when shrinking.
    """
    from skimage.transform import resize

    ny, nx = shape
    h, w = img.shape
    if h * nx > w * ny:  # too tall
        h2 = max(1, round(w * ny / nx))
        y0 = (h - h2) // 2
        img = img[y0 : y0 + h2]
    else:
        w2 = max(1, round(h * nx / ny))
        x0 = (w - w2) // 2
        img = img[:, x0 : x0 + w2]
    out = resize(img, (ny, nx), order=1, anti_aliasing=True, mode="reflect")
    return np.clip(out, 0.0, 1.0)


def _downsample(img: np.ndarray, f: int) -> np.ndarray:
    """Block-average by ``f`` (the supersampled drawings are anti-aliased this way)."""
    ny, nx = img.shape[0] // f, img.shape[1] // f
    return img[: ny * f, : nx * f].reshape(ny, f, nx, f).mean(axis=(1, 3))


def siemens_star(shape: tuple[int, int], n_spokes: int = 36, *, supersample: int = 4) -> np.ndarray:
    """Siemens star: ``n_spokes`` dark/bright sector pairs filling the shorter side.

    Parameters
    ----------
    shape : (ny, nx)
        Pixels.
    n_spokes : int
        Number of bright sectors; the local period at radius ``r`` pixels is
        ``2 pi r / n_spokes`` pixels, so resolution can be read off the radius.
    supersample : int
        Drawing is done on a finer grid and block-averaged (anti-aliased edges).
    """
    ny, nx = shape
    f = supersample
    y = (np.arange(ny * f) + 0.5) / f - ny / 2
    x = (np.arange(nx * f) + 0.5) / f - nx / 2
    yy, xx = np.meshgrid(y, x, indexing="ij")
    r = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx)
    img = (np.sin(n_spokes * theta) > 0).astype(np.float64)
    img[r > 0.45 * min(ny, nx)] = 0.0
    return _downsample(img, f)


def usaf_target(shape: tuple[int, int], *, largest_bar: float | None = None) -> np.ndarray:
    """A USAF-1951-style bar target drawn procedurally.

    Elements are pairs of three-bar patterns (horizontal bars, then vertical bars); each bar
    is ``w`` pixels wide and ``5 w`` long with ``w`` gaps, and ``w`` shrinks by ``2**(1/6)``
    from element to element (the USAF progression) down to one pixel. Elements are packed in
    rows from the top-left.

    Parameters
    ----------
    shape : (ny, nx)
        Pixels.
    largest_bar : float, optional
        Width of the widest bar in pixels (default ``min(shape) / 24``).
    """
    ny, nx = shape
    f = 4  # supersampling for sub-pixel bar widths
    img = np.zeros((ny * f, nx * f))
    w = float(largest_bar) if largest_bar else max(1.0, min(ny, nx) / 24)
    margin = max(1.0, 0.5 * w)
    y0 = x0 = margin
    row_h = 0.0
    while w >= 1.0:
        size = 5 * w
        elem_w = 2 * size + 3 * w  # two 5w squares, a w gap between, 2w spacing after
        if x0 + elem_w - 2 * w > nx - margin:  # wrap to the next row
            x0 = margin
            y0 += row_h + 2 * w
            row_h = 0.0
        if y0 + size > ny - margin:
            break
        for k in range(3):  # horizontal bars (vary along y): resolve vertical frequencies
            ya, yb = y0 + 2 * k * w, y0 + (2 * k + 1) * w
            img[round(ya * f) : round(yb * f), round(x0 * f) : round((x0 + size) * f)] = 1.0
        xv = x0 + size + w
        for k in range(3):  # vertical bars
            xa, xb = xv + 2 * k * w, xv + (2 * k + 1) * w
            img[round(y0 * f) : round((y0 + size) * f), round(xa * f) : round(xb * f)] = 1.0
        x0 += elem_w
        row_h = max(row_h, size)
        w /= 2 ** (1 / 6)
    return _downsample(img, f)


def dead_leaves(
    shape: tuple[int, int],
    *,
    seed: int | None = 0,
    r_min: float = 1.0,
    r_max: float | None = None,
    max_discs: int = 200_000,
) -> np.ndarray:
    """Dead-leaves image: occluding discs of random grey level, radii ``~ r^-3``.

    The ``r^-3`` law makes the image statistically scale invariant (a flat-ish power
    spectrum in log-log), so it has structure at every scale a reconstruction can resolve.

    Parameters
    ----------
    shape : (ny, nx)
        Pixels.
    seed : int or None
        Random seed (same seed, same image).
    r_min, r_max : float
        Disc radii bounds in pixels (``r_max`` defaults to ``min(shape) / 6``).
    max_discs : int
        Safety cap; discs are laid front to back until every pixel is covered.
    """
    from scipy.ndimage import distance_transform_edt

    ny, nx = shape
    rng = np.random.default_rng(seed)
    r_max = float(r_max) if r_max else max(2.0 * r_min, min(ny, nx) / 6)
    img = np.zeros((ny, nx))
    covered = np.zeros((ny, nx), dtype=bool)
    todo = ny * nx
    # Inverse-CDF sampling of p(r) ~ r^-3 on [r_min, r_max], drawn in batches (fast).
    a, b = r_min**-2, r_max**-2
    n_drawn = 0
    while todo > 0.005 * ny * nx and n_drawn < max_discs:
        batch = rng.random((1024, 4))
        n_drawn += len(batch)
        radii = (a - batch[:, 0] * (a - b)) ** -0.5
        cys = -radii + batch[:, 1] * (ny + 2 * radii)
        cxs = -radii + batch[:, 2] * (nx + 2 * radii)
        for r, cy, cx, grey in zip(radii, cys, cxs, batch[:, 3], strict=True):
            ya, yb = max(0, int(cy - r)), min(ny, int(cy + r) + 1)
            xa, xb = max(0, int(cx - r)), min(nx, int(cx + r) + 1)
            if ya >= yb or xa >= xb:
                continue
            dy = np.arange(ya, yb)[:, None] + 0.5 - cy
            dx = np.arange(xa, xb)[None, :] + 0.5 - cx
            disc = dy * dy + dx * dx <= r * r
            cov = covered[ya:yb, xa:xb]
            new = disc & ~cov  # front to back: earlier discs occlude later ones
            k = int(new.sum())
            if k:
                img[ya:yb, xa:xb][new] = grey
                cov |= new
                todo -= k
    if todo:
        # The last ~0.5 % of pixels would need tens of thousands of tiny discs: give them
        # the grey level of the nearest covered pixel instead.
        _, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
        img = img[iy, ix]
    return img


def blobs(shape: tuple[int, int], *, seed: int | None = 0, fraction: float = 0.5) -> np.ndarray:
    """Smoothed binary blobs (scikit-image's generator, seeded)."""
    from scipy.ndimage import gaussian_filter
    from skimage.data import binary_blobs

    n = max(shape)
    img = binary_blobs(n, blob_size_fraction=0.08, volume_fraction=fraction, rng=seed)
    img = gaussian_filter(img.astype(np.float64), 1.0)[: shape[0], : shape[1]]
    return np.clip(img, 0.0, 1.0)


def ic_layout(shape: tuple[int, int], *, seed: int | None = 0, pitch: float | None = None,
              supersample: int = 4) -> np.ndarray:
    """Integrated-circuit-like wiring: two metal layers of Manhattan wires and vias.

    The lower layer holds horizontal wires, the upper one vertical wires, on routing tracks
    ``pitch`` pixels apart (default: drawn in ``[3, 6]``); wires are one or two tracks wide
    minus a gap and are cut into segments of random length; vias join the layers where
    wires cross. Grey levels are summed thicknesses (lower 0.45, upper 0.35, via 0.2):
    a sample class with consistent structure, as a single-shot network expects.

    Parameters
    ----------
    shape : (ny, nx)
        Pixels.
    seed : int or None
        Random seed (same seed, same layout).
    pitch : float, optional
        Routing-track pitch, pixels.
    supersample : int
        Drawing is done on a finer grid and block-averaged (anti-aliased edges).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    f = int(supersample)
    p = float(pitch) if pitch else float(rng.uniform(3.0, 6.0))
    lower = np.zeros((ny * f, nx * f), bool)
    upper = np.zeros_like(lower)

    def wires(layer: np.ndarray, along: int) -> None:
        long_, short = (nx, ny) if along == 1 else (ny, nx)
        t = float(rng.uniform(0, p))
        while t < short:
            width = p * (2 if rng.random() < 0.2 else 1) - max(1.0, 0.35 * p)
            if rng.random() < 0.55:  # this track is used
                s = float(rng.uniform(-long_ / 4, 0))
                while s < long_:
                    length = float(rng.exponential(6 * p)) + 2 * p
                    a, b = round(t * f), round((t + width) * f)
                    c, d = round(max(s, 0) * f), round(min(s + length, long_) * f)
                    if along == 1:
                        layer[a:b, c:d] = True
                    else:
                        layer[c:d, a:b] = True
                    s += length + float(rng.exponential(4 * p)) + p
            t += p * (2 if width > p else 1)

    wires(lower, along=1)
    wires(upper, along=0)
    both = lower & upper
    via = np.zeros_like(both)
    ys, xs = np.nonzero(both[::f, ::f])
    keep = rng.random(len(ys)) < 0.02
    v = max(1, round(0.4 * p * f))
    for y, x in zip(ys[keep] * f, xs[keep] * f, strict=True):
        via[y:y + v, x:x + v] = True
    img = 0.45 * lower + 0.35 * upper + 0.2 * (via & both)
    return _downsample(img, f)


def lattice(shape: tuple[int, int], *, seed: int | None = 0, spacing: float = 10.0,
            sigma: float = 1.5, vacancies: float = 0.25) -> np.ndarray:
    """Atomic columns: Gaussian peaks on a square lattice (``spacing`` px), a random
    lattice offset and a random fraction ``vacancies`` of empty sites, in ``[0, 1]``.

    Different seeds give slices a multislice reconstruction must tell apart (offsets and
    vacancies differ, as in a crystal's successive layers).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    off = rng.uniform(0, spacing, 2)
    ys = np.arange(off[0] - spacing, ny + spacing, spacing)
    xs = np.arange(off[1] - spacing, nx + spacing, spacing)
    cy, cx = (g.ravel() for g in np.meshgrid(ys, xs, indexing="ij"))
    keep = rng.uniform(size=cy.size) >= vacancies
    yy, xx = np.arange(ny)[:, None], np.arange(nx)[None, :]
    img = np.zeros(shape)
    r = int(math.ceil(4 * sigma))
    for y, x in zip(cy[keep], cx[keep], strict=True):
        y0, y1 = max(0, int(y) - r), min(ny, int(y) + r + 2)
        x0, x1 = max(0, int(x) - r), min(nx, int(x) + r + 2)
        if y0 < y1 and x0 < x1:
            img[y0:y1, x0:x1] += np.exp(-((yy[y0:y1] - y) ** 2 + (xx[:, x0:x1] - x) ** 2)
                                        / (2 * sigma**2))  # fmt: skip
    return np.clip(img, 0, 1)


def image(kind: str, shape: tuple[int, int], *, seed: int | None = 0) -> np.ndarray:
    """A float64 image in ``[0, 1]`` of ``shape`` for one of :data:`KINDS`.

    Parameters
    ----------
    kind : str
        Image kind (module docstring lists them).
    shape : (ny, nx)
        Pixels.
    seed : int or None
        Seed for the random procedural kinds (``dead_leaves``, ``blobs``, ``layout``,
        ``lattice``).
    """
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 1:
        raise ValueError(f"image shape must be positive; got {shape}")
    if kind in BUNDLED:
        return _fit(_bundled(kind), shape)
    if kind == "usaf":
        return usaf_target(shape)
    if kind == "siemens":
        return siemens_star(shape)
    if kind == "dead_leaves":
        return dead_leaves(shape, seed=seed)
    if kind == "blobs":
        return blobs(shape, seed=seed)
    if kind == "layout":
        return ic_layout(shape, seed=seed)
    if kind == "lattice":
        return lattice(shape, seed=seed)
    if kind == "flat":
        return np.ones(shape)
    raise ValueError(f"unknown object kind {kind!r}; choose one of {', '.join(KINDS)}")


def complex_object(
    shape: tuple[int, int],
    kind: str = "camera",
    *,
    amplitude_kind: str | None = None,
    amplitude_range: tuple[float, float] = (0.8, 1.0),
    phase_range: tuple[float, float] = (0.0, math.pi / 2),
    phase_object: bool = False,
    seed: int | None = 0,
    as_torch: bool = False,
):
    """A complex transmission ``O = a exp(i phi)`` built from test images.

    Parameters
    ----------
    shape : (ny, nx)
        Object pixels.
    kind : str
        Image that sets the phase (one of :data:`KINDS`).
    amplitude_kind : str, optional
        Image that sets the amplitude; ``"same"`` uses ``kind``; default: a different
        bundled picture for bundled ``kind`` (so amplitude/phase cross-talk is visible) and
        the same drawing for procedural kinds (a dead-leaves image with the next seed).
    amplitude_range : (float, float)
        Amplitude at image value 0 and 1 (dimensionless transmission, ``<= 1`` for a
        passive specimen).
    phase_range : (float, float)
        Phase in radians at image value 0 and 1.
    phase_object : bool
        Pure phase object: amplitude is 1 everywhere (``amplitude_*`` ignored).
    seed : int or None
        Seed for random procedural kinds.
    as_torch : bool
        Return a ``torch.complex64`` tensor instead of a numpy array.

    Returns
    -------
    complex64 ndarray (or tensor) of ``shape``.
    """
    phi_img = image(kind, shape, seed=seed)
    p0, p1 = phase_range
    phase = p0 + (p1 - p0) * phi_img
    if phase_object:
        amp = np.ones(shape)
    else:
        akind = amplitude_kind or _AMPLITUDE_PARTNER.get(kind, "same")
        if akind == "same":
            # Random drawings: a different realisation, else amplitude == phase pattern.
            aseed = None if seed is None else seed + 1
            a_img = image(kind, shape, seed=aseed) if kind in ("dead_leaves", "blobs") else phi_img
        else:
            a_img = image(akind, shape, seed=seed)
        a0, a1 = amplitude_range
        amp = a0 + (a1 - a0) * a_img
    obj = (amp * np.exp(1j * phase)).astype(np.complex64)
    if as_torch:
        import torch

        return torch.from_numpy(obj)
    return obj
