"""Large coded-ptychography fields, simulated straight to a CXI file in bounded memory.

:func:`~ptytasks.simulate.coded_fourier.simulate_coded` holds every frame in memory; a
2048 x 2048 sensor with a few dozen frames is already gigabytes of intermediate fields.
:func:`coded_field` computes the frames a few at a time (``block``), adds their
Poisson noise from a per-block seed, and spills them to a scratch memory map, from which
:func:`storage.simulated.simulate_coded_field` streams them into a CXI file block by
block. Peak memory is
the object, the coded surface and one block of fields, whatever the frame count.

The specimen defaults to a *cell smear* (:func:`cells_object`): many small phase cells on
a clear background, the usual wide-field coded-ptychography specimen. Propagation-based
phase contrast barely sees slowly varying phase (at frequency ``f`` the phase transfer is
``~ sin(pi lambda z f^2)``), so a picture stretched over thousands of pixels would make the
test one of the low-frequency null space, not of the pipeline. Positions are whole pixels
(a stage stepping the sensor pitch), so no sub-pixel shift rings at the window edges.
Conventions, the dose and the stored truth are those of :mod:`ptytasks.simulate`.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.simulate import _common as C
from ptytasks.simulate.coded_fourier import coded_surface
from ptytasks.simulate.objects import complex_object


def cells_object(
    shape: tuple[int, int],
    *,
    seed: int | None = 0,
    radius: tuple[float, float] = (3.0, 9.0),
    coverage: float = 0.35,
    phase: float = 1.5,
    absorption: float = 0.3,
) -> np.ndarray:
    """A smear of round cells: complex64 transmission ``a exp(i phi)`` of ``shape``.

    Cells of radius ``radius`` (pixels, uniform) at random places cover about ``coverage``
    of the field (overlaps add). Each has a domed phase ``phase * sqrt(1 - (r/R)^2)``
    (radians, random 0.5-1x), an amplitude dip ``absorption`` (random 0-1x) and, for one in
    three, a denser nucleus of half the radius.
    """
    ny, nx = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    r_lo, r_hi = radius
    mean_area = math.pi * (r_lo**2 + r_lo * r_hi + r_hi**2) / 3
    n = int(coverage * ny * nx / mean_area)
    cy, cx = rng.uniform(0, ny, n), rng.uniform(0, nx, n)
    rad = rng.uniform(r_lo, r_hi, n)
    ph = phase * rng.uniform(0.5, 1.0, n)
    ab = absorption * rng.uniform(0.0, 1.0, n)
    nucleus = rng.random(n) < 1 / 3
    phi = np.zeros((ny, nx))
    mu = np.zeros((ny, nx))
    for y, x, r, p, a, nuc in zip(cy, cx, rad, ph, ab, nucleus, strict=True):
        y0, y1 = max(0, int(y - r)), min(ny, int(y + r) + 2)
        x0, x1 = max(0, int(x - r)), min(nx, int(x + r) + 2)
        dy = np.arange(y0, y1)[:, None] + 0.5 - y
        dx = np.arange(x0, x1)[None, :] + 0.5 - x
        q = 1 - (dy * dy + dx * dx) / (r * r)
        inside = np.sqrt(np.clip(q, 0, None))
        phi[y0:y1, x0:x1] += p * inside
        mu[y0:y1, x0:x1] += a * (q > 0)
        if nuc:
            qn = 1 - 4 * (dy * dy + dx * dx) / (r * r)
            phi[y0:y1, x0:x1] += 0.5 * p * np.sqrt(np.clip(qn, 0, None))
            mu[y0:y1, x0:x1] += a * (qn > 0)
    return (np.exp(-np.clip(mu, 0, 2)) * np.exp(1j * phi)).astype(np.complex64)


@contextlib.contextmanager
@C.simulator(exclude=("position_error_px", "position_scale_error", "distance_error",
                      "wavelength_error"), object_kind="cells", amplitude_range=(0.7, 1.0),
             dose=1e4, dose_unit="pixel")  # fmt: skip
def coded_field(
    workdir: str | os.PathLike,
    *,
    frame_size: int = 2048,
    n_positions: int = 16,
    step_px: float = 4.0,
    wavelength: float = 532e-9,
    pixel_size: float = 1.85e-6,
    distance: float = 300e-6,
    surface_distance: float = 300e-6,
    block: int = 2,
    acq: C.Acquisition,
) -> Iterator[PtychoData]:
    """Simulate a coded-ptychography field with its frames spilled to disk; a context.

    Yields the dataset with ``frames`` a :class:`~ptytasks.lazy_frames.LazyFrames` over a
    scratch memory map in ``workdir`` (deleted on exit): write it out inside the context
    (:func:`storage.simulated.simulate_coded_field` writes CXI and reads it back lazily).

    Parameters
    ----------
    frame_size : int
        Sensor side, pixels; the object is the sensor plus the scan's extent plus
        ``margin`` on every side (at least ``frame_size`` square).
    n_positions, step_px : int, float
        Random (Poisson-disc) specimen translations, mean nearest-neighbour step in pixels,
        rounded to whole pixels.
    distance, surface_distance : float
        Specimen-to-surface and surface-to-pixel distances, metres. The surface must stand
        off the pixels (a cover glass) for the phase to show in the intensity: at a few
        micrometres only the specimen's free-space propagation encodes it.
    block : int
        Frames computed at once (peak memory ~ ``block`` x 10 sensor-sized complex fields).
    object_kind, amplitude_range, phase_range, dose, dose_unit, margin, seed
        The shared settings (:class:`~ptytasks.simulate._common.Acquisition`): object
        ``"cells"`` (:func:`cells_object`) or any kind of
        :func:`~ptytasks.simulate.objects.complex_object` (default amplitude 0.7-1,
        phase 0-pi/2); Poisson noise at 1e4 photons per pixel by default. No injected
        errors (the nominal scan is the true one).

    Yields
    ------
    PtychoData
        Geometry and truth as :func:`~ptytasks.simulate.coded_fourier.simulate_coded` sets
        them.
    """
    from ptytasks.lazy_frames import LazyFrames
    from ptytasks.physics.models.coded import Coded

    s_obj, s_scan, s_err, s_probe, s_noise = acq.seeds()
    shape = (int(frame_size),) * 2
    flux = acq.flux(shape)
    probe = np.full(shape, math.sqrt(flux / (shape[0] * shape[1])), dtype=np.complex64)
    surface = coded_surface(shape, seed=s_probe)
    overlap = 1 - float(step_px) / shape[1]
    true_px, _, base, _ = C.scan("random", shape[1], overlap, shape, n_positions, acq.margin,
                                 s_scan, s_err, 0.0, 1.0)  # fmt: skip
    true_px = np.round(true_px)
    if acq.object_kind == "cells":
        obj = cells_object(base, seed=s_obj)
    else:
        obj = complex_object(base, acq.object_kind, amplitude_range=acq.amplitude_range,
                             phase_range=acq.phase_range, seed=s_obj)  # fmt: skip
    model = Coded(true_px, base, shape, wavelength=wavelength, distance=distance,
                  surface_distance=surface_distance, pixel_size=pixel_size,
                  surface=torch.as_tensor(surface))  # fmt: skip
    n = len(true_px)
    o, p = torch.from_numpy(obj), torch.from_numpy(probe)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".coded-field-") as tmp:
        spill = np.lib.format.open_memmap(Path(tmp) / "frames.npy", mode="w+",
                                          dtype=np.float32, shape=(n, *shape))  # fmt: skip
        with torch.no_grad():
            for k, s in enumerate(range(0, n, block)):
                idx = torch.arange(s, min(n, s + block))
                expected = model(o, p, idx).numpy().astype(np.float32, copy=False)
                spill[s : s + len(idx)] = C.detect(expected, acq.dose, s_noise + k)
        spill.flush()
        frames = LazyFrames(lambda a, b: np.asarray(spill[a:b]), spill.shape)
        meta = acq.meta(flux_per_frame=flux, scan="random", overlap=overlap,
                        illumination="plane", surface=surface)  # fmt: skip
        data = PtychoData(
            modality="coded", frames=frames, wavelength=wavelength, pixel_size=pixel_size,
            object_shape=tuple(obj.shape), positions_px=true_px, distance=distance,
            detector_pixel=pixel_size, params={"surface_distance": surface_distance},
            ground_truth={
                "object": obj, "probe": probe, "positions_px": true_px, "surface": surface,
                "wavelength": np.float64(wavelength), "distance": np.float64(distance),
            },
            meta=meta,
        )  # fmt: skip
        yield data
