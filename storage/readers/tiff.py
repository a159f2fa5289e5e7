"""TIFF stacks (one multi-page file, or a folder of single-frame files) plus positions.

Positions come from ``positions=`` (a CSV, ``.npy`` or array; see
:func:`storage.readers._common.load_positions`) or a sidecar ``<stem>.csv`` /
``<stem>_positions.csv`` next to the stack. CSV columns ``y,x`` are object pixels,
``y_m,x_m`` metres (converted with ``pixel_size``). Frames are read page by page when
``lazy=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from ptytasks.data import PtychoData
from ptytasks.lazy_frames import LazyFrames
from storage.errors import DataError, wrap_errors
from storage.geometry import DEFAULT_MARGIN, object_shape_for, positions_from_metres
from storage.readers import _common as C
from storage.readers.sources import positions_sidecars, tiff_frame_files
from storage.validate import check_positions_extent

__all__ = ["read_tiff"]


def _pages(path: Path):
    """``(n, shape, dtype, get(i) -> 2-D array)`` for a stack file or a folder of TIFFs."""
    if path.is_dir():
        files = tiff_frame_files(path)
        if not files:
            raise DataError(path, None, "folder holds no .tif/.tiff files")
        with wrap_errors(files[0], None, "reading TIFF"):
            first = tifffile.imread(files[0])
        if first.ndim != 2:  # an RGB or multi-page file in a folder of single frames
            raise DataError(files[0], None, f"a frame folder holds one 2-D frame per file; "
                            f"this one has shape {first.shape}")  # fmt: skip

        def get(i: int) -> np.ndarray:
            with wrap_errors(files[i], None, "reading TIFF"):
                return tifffile.imread(files[i])

        return len(files), first.shape, first.dtype, get
    with wrap_errors(path, None, "reading TIFF"):
        tf = tifffile.TiffFile(path)
        series = tf.series[0]
        shape, dtype = series.shape, series.dtype
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise DataError(path, "pages", f"expected a stack of 2-D frames, got shape {shape}")

    if len(series.pages) == shape[0]:  # one page per frame: read lazily, page by page

        def get_page(i: int) -> np.ndarray:
            with wrap_errors(path, f"page {i}", "reading TIFF"):
                return series.pages[i].asarray()

    else:  # frames packed into fewer pages (e.g. planar samples): read the series once
        with wrap_errors(path, "series 0", "reading TIFF"):
            whole = series.asarray().reshape(shape)
        get_page = whole.__getitem__

    return shape[0], shape[1:], dtype, get_page


def _pos_field(positions) -> str:
    return os.fspath(positions) if isinstance(positions, (str, os.PathLike)) else "positions"


def read_tiff(
    path: str | os.PathLike,
    *,
    positions=None,
    positions_units: str | None = None,
    modality: str = "farfield",
    fftshift: bool = False,
    margin: float = DEFAULT_MARGIN,
    lazy: bool = False,
    **options,
) -> PtychoData:
    """Read a TIFF stack with a CSV of positions.

    Parameters
    ----------
    path : path-like
        Multi-page ``.tif``/``.tiff`` or a folder of single-frame TIFFs (sorted by name).
    positions : path-like or array, optional
        ``(scan, (y, x))``; default: sidecar CSV.
    positions_units : {"px", "m"}, optional
        Overrides the unit implied by the CSV header (other values are refused).
    fftshift : bool
        Shift corner-centred far-field frames to the centre.
    **options
        ``wavelength`` (or ``energy_ev``), ``pixel_size``, ``distance``, ``detector_pixel``
        and other :class:`PtychoData` overrides. A wavelength and a pixel size are needed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file does not exist")
    energy = options.pop("energy_ev", None)
    ov = C.split_overrides(options, "read_tiff")
    fftshift = C.flag(fftshift, path, "fftshift")
    n, (ny, nx), dtype, get = _pages(path)
    units = C.check_positions_units(positions_units, path)
    if positions is None:  # the sidecar storage.readers.sources.source_files lists
        positions = next(iter(positions_sidecars(path, "tiff")), None)
    if positions is None:
        raise DataError(path, "positions", "no positions: pass positions= (CSV/.npy/array) or "
                        f"put {path.stem}.csv beside the stack")  # fmt: skip
    pos, units = C.load_positions(positions, n, path, units)
    wl = C.wavelength_from({"wavelength": ov.get("wavelength"), "energy_ev": energy}, path)
    px = ov.get("pixel_size")
    if wl is None or px is None:
        raise DataError(path, "wavelength" if wl is None else "pixel_size",
                        "TIFF stacks carry no geometry: pass wavelength= (or energy_ev=) and "
                        "pixel_size= (m)")  # fmt: skip
    positions_px = positions_from_metres(pos, px if units == "m" else 1.0, margin)
    check_positions_extent(positions_px, (ny, nx), path, _pos_field(positions), units, px)

    def frame(i: int) -> np.ndarray:
        out = np.asarray(get(i))
        if out.shape != (ny, nx) or out.dtype.kind not in "iuf":
            raise DataError(path, f"frame {i}", f"shape {out.shape} dtype {out.dtype} differs "
                            f"from the first frame's {(ny, nx)} {dtype}")  # fmt: skip
        return out.astype(np.float32)

    def block(a: int, b: int) -> np.ndarray:
        out = np.stack([frame(i) for i in range(a, b)])
        return np.fft.fftshift(out, axes=(-2, -1)) if fftshift else out

    frames = LazyFrames(block, (n, ny, nx), dtype) if lazy else block(0, n)
    d = PtychoData(
        modality=modality, frames=frames, wavelength=float(wl), pixel_size=float(px),
        object_shape=object_shape_for(positions_px, (ny, nx), margin),
        positions_px=positions_px, meta={"source": str(path), "reader": "tiff"},
    )  # fmt: skip
    ov.pop("wavelength", None)
    ov.pop("pixel_size", None)
    return C.finish(d, path, ov, lazy)
