"""Which files a reader reads for one dataset: the main file or frame folder, plus positions.

:func:`storage.readers.read_any` follows files besides the one it is given: the frames of a
TIFF folder, a positions sidecar beside a TIFF stack or an ``.npy`` stack, a ``positions=``
file. Anything that identifies a dataset by its files -- the raw step's fingerprint
(:meth:`storage.store.RunStore.ingest`), a facility's change detection -- must cover all of
them, or a corrected sidecar or a rewritten frame would leave stale data in place. The
readers take their sidecar candidates from here, so the list and the reading never drift.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from storage.errors import wrap_errors

if TYPE_CHECKING:
    from ptytasks.data import PtychoData

__all__ = ["TIFF_SUFFIXES", "tiff_frame_files", "positions_sidecars", "source_files",
           "frame_source_id", "meta_id"]

TIFF_SUFFIXES = (".tif", ".tiff")
_DIGITS = re.compile(r"(\d+)")


def tiff_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The single-frame TIFFs of a frame folder, in reading order: by name, runs of digits
    compared as numbers (``frame_2`` before ``frame_10``, as a camera counts them; plain
    sorting paired frames with the wrong positions); hidden ones too."""
    def key(p: Path):
        return [(0, int(t), t) if t.isdigit() else (1, 0, t) for t in _DIGITS.split(p.name)]

    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in TIFF_SUFFIXES),
                  key=key)  # fmt: skip


def _sidecar_candidates(path: Path, kind: str | None) -> tuple[Path, ...]:
    if kind == "tiff":  # storage.readers.tiff.read_tiff
        return (path.with_suffix(".csv"), path.with_name(f"{path.stem}_positions.csv"))
    if kind == "npy":  # storage.readers.npz.read_npy (3-D stacks; 4-D STEM has none)
        return (path.with_name(f"{path.stem}_positions.csv"),
                path.with_name(f"{path.stem}_positions.npy"))  # fmt: skip
    return ()


def positions_sidecars(path: str | os.PathLike, kind: str) -> list[Path]:
    """The existing positions sidecars of ``path`` read as ``kind`` (``"tiff"``/``"npy"``),
    in the order the reader tries them (it reads the first)."""
    path = Path(path)
    cands = _sidecar_candidates(path, kind)
    return [c for c in dict.fromkeys(cands) if c != path and c.is_file()]


def _npy_is_4d(path: Path) -> bool:
    import numpy as np

    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 4
    except Exception:  # noqa: BLE001 - unreadable: the reader reports it; assume a stack
        return False


def source_files(path: str | os.PathLike, positions=None) -> list[Path]:
    """Every file ``read_any(path, positions=positions)`` reads, main file first.

    A frame folder lists its TIFFs (in reading order); a TIFF stack or 3-D ``.npy`` adds
    the positions sidecar the reader would take when ``positions`` is ``None``; a
    ``positions`` path is listed itself (an array names no file). A path that does not
    exist is returned alone (the reader reports it).
    """
    from storage.readers import _kind

    path = Path(path)
    if not path.exists():
        return [path]
    kind = _kind(path)
    files = tiff_frame_files(path) if path.is_dir() else [path]
    if isinstance(positions, (str, os.PathLike)):
        files.append(Path(positions))
    elif positions is None and (kind == "tiff" or (kind == "npy" and not _npy_is_4d(path))):
        files += positions_sidecars(path, kind)[:1]
    return list(dict.fromkeys(files))


def frame_source_id(frames, meta: dict, positions=None):
    """Cheap identity of lazily read frames: path, size and mtime of every file the reader
    reads for them (:func:`storage.readers.sources.source_files`: the frames of a TIFF
    folder one by one, a positions sidecar or ``positions`` file), so that rewriting any
    of them -- not only the main path -- changes the identity."""
    src = meta.get("source")
    if src and os.path.exists(src):
        files = []
        for f in source_files(src, positions):
            with wrap_errors(f, None, "reading the file's size and mtime"):
                st = os.stat(f)
            files.append((os.path.realpath(f), st.st_size, st.st_mtime_ns))
        return {"source": os.path.abspath(src), "files": files}
    return {"frames": np.asarray(frames)}


def meta_id(d: PtychoData) -> dict:
    """What the raw step holds besides the frames, as read (positions, probe, geometry)."""
    keys = ("modality", "wavelength", "pixel_size", "object_shape", "positions_px",
            "wavevectors", "distance", "detector_pixel", "probe", "params")  # fmt: skip
    return {k: getattr(d, k) for k in keys}
