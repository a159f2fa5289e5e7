"""OME-Zarr 0.5 image metadata for the mosaic pyramid (napari, neuroglancer, ome-zarr).

The mosaic is a complex transmission; OME-Zarr images are real-valued. Each pyramid level
therefore holds, beside the complex ``object`` that ptyflow's own readers use, a float32
array ``amplitude_phase`` of dims ``(c, y, x)``: channel 0 is ``|object|`` (dimensionless),
channel 1 is ``angle(object)`` (rad, in [-pi, pi]). The mosaic group (``mosaic``,
``mosaic_a``, ...) is the OME-Zarr *image*: its attributes carry, under the key ``"ome"``,

* ``version`` ``"0.5"``;
* ``multiscales``: axes ``c`` (channel), ``y``, ``x`` (space, ``"meter"``) and one dataset
  per level, ``level_<k>/amplitude_phase``, with a ``scale`` transform of
  ``[1, pixel_size * 2**k, pixel_size * 2**k]`` (m per pixel) and a ``translation`` that
  puts each pixel's centre where the level's ``y``/``x`` coordinate arrays say it is;
* ``omero``: channel labels and display windows (transitional OME metadata that the
  ``ome-zarr`` reader and napari use for layer names and contrast).

Only plain dicts are built here (no OME library is needed to write); the tests validate
them with ``ome-zarr-models`` and open the group with ``ome-zarr``'s reader.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CHANNELS", "IMAGE", "OME_VERSION", "image_attrs", "windows"]

OME_VERSION = "0.5"
#: Name of the real-valued (c, y, x) array of every pyramid level.
IMAGE = "amplitude_phase"
#: Channel labels along ``c`` and their units.
CHANNELS: tuple[str, ...] = ("amplitude", "phase")
CHANNEL_UNITS: tuple[str, ...] = ("1", "rad")


def level_transforms(k: int, pixel_size: float, origin) -> list[dict]:
    """OME coordinate transformations of pyramid level ``k``.

    Parameters
    ----------
    k : level; level ``k`` is ``2**k`` times coarser than level 0
    pixel_size : level-0 pixel size, m
    origin : ``(y, x)`` position of the centre of level-0 pixel ``[0, 0]``, m

    Returns
    -------
    ``[scale, translation]`` for axes ``(c, y, x)``: a level-``k`` pixel ``i`` averages
    level-0 pixels ``2**k i .. 2**k i + 2**k - 1``, so its centre lies at
    ``origin + (2**k i + (2**k - 1) / 2) * pixel_size`` (the level's coordinate arrays).
    """
    f = 2**k
    step = float(pixel_size) * f
    shift = [float(o) + (f - 1) / 2 * float(pixel_size) for o in origin]
    return [{"type": "scale", "scale": [1.0, step, step]},
            {"type": "translation", "translation": [0.0, *shift]}]  # fmt: skip


def windows(amplitude: np.ndarray | None) -> list[dict]:
    """OMERO display windows: amplitude from its values, phase over [-pi, pi].

    Parameters
    ----------
    amplitude : amplitudes of the covered pixels (any shape), or None before assembly

    Returns
    -------
    One ``{"min", "max", "start", "end"}`` per channel; the amplitude's start/end are its
    0.5 and 99.5 percentiles, so a few hot pixels do not flatten the contrast.
    """
    a = np.asarray(amplitude if amplitude is not None else [], np.float64)
    a = a[np.isfinite(a)]
    if a.size:
        lo, hi = float(a.min()), float(a.max())
        start, end = (float(v) for v in np.percentile(a, [0.5, 99.5]))
    else:
        lo, hi, start, end = 0.0, 1.0, 0.0, 1.0
    if end <= start:  # a flat image: widen so viewers get a non-empty range
        start, end = start - 0.5, start + 0.5
    return [{"min": lo, "max": hi, "start": start, "end": end},
            {"min": -math.pi, "max": math.pi, "start": -math.pi, "end": math.pi}]  # fmt: skip


def image_attrs(
    name: str, levels: int, *, pixel_size: float, origin=(0.0, 0.0), amplitude=None
) -> dict:
    """The ``"ome"`` attribute of a mosaic group with levels ``0..levels``.

    Parameters
    ----------
    name : name of the multiscale image (the mosaic group's name)
    levels : index of the coarsest level written (0: level 0 only)
    pixel_size : level-0 pixel size, m
    origin : ``(y, x)`` centre of level-0 pixel ``[0, 0]``, m
    amplitude : sample of covered amplitudes for the display window (see :func:`windows`)

    Returns
    -------
    dict with ``version``, ``multiscales`` and ``omero``, JSON-serialisable.
    """
    if not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise ValueError(f"pixel_size must be a positive length in metres, not {pixel_size!r}")
    axes = [{"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "meter"},
            {"name": "x", "type": "space", "unit": "meter"}]  # fmt: skip
    datasets = [{"path": f"level_{k}/{IMAGE}",
                 "coordinateTransformations": level_transforms(k, pixel_size, origin)}
                for k in range(levels + 1)]  # fmt: skip
    # Phase is the usual contrast of a ptychogram: shown first; amplitude is one click away.
    channels = [{"label": lab, "color": "FFFFFF", "active": lab == "phase", "window": win,
                 "coefficient": 1.0, "family": "linear", "inverted": False}
                for lab, win in zip(CHANNELS, windows(amplitude), strict=True)]  # fmt: skip
    return {
        "version": OME_VERSION,
        "multiscales": [{
            "name": name, "axes": axes, "datasets": datasets,
            "type": "weighted 2x2 mean",
            "metadata": {"description": "level k+1 = 2x2 mean of level k weighted by the "
                                        "blending weight; amplitude and phase of the complex "
                                        "mean", "channel_units": list(CHANNEL_UNITS)},
        }],  # fmt: skip
        "omero": {"name": name, "channels": channels, "rdefs": {"model": "greyscale"}},
    }
