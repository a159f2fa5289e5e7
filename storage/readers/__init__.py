"""Readers of measured and simulated formats into :class:`~ptytasks.data.PtychoData`.

:func:`read_any` picks the reader by extension, then by content (magic bytes):

=======================  ==================================================================
``.cxi``                 :func:`storage.cxi.read_cxi`
``.h5 .hdf5 .nxs .emd``  ``mapping=`` given: :func:`read_hdf5`; a CXI ``entry_1``:
                         :func:`read_cxi`; a 4-D dataset: :func:`read_stem4d`
``.npz`` ``.npz.bz2``    :func:`read_npz`
``.npy``                 4-D: :func:`read_stem4d`; 3-D: :func:`read_npy`
``.tif .tiff`` / folder  :func:`read_tiff`
``.mat``                 :func:`read_fpm_mat`
=======================  ==================================================================

Every reader takes ``lazy=`` (frames stay on disk where the format allows) and
:class:`PtychoData` field overrides, raises only :class:`~storage.errors.DataError` for
bad input, and never unpickles.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from storage.errors import DataError, wrap_errors

__all__ = ["read_any", "read_cxi", "read_npz", "read_npy", "read_stem4d", "read_tiff",
           "read_fpm_mat", "read_hdf5"]  # fmt: skip

_MAGIC = (
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"PK\x03\x04", "npz"),
    (b"BZh", "bz2"),
    (b"\x93NUMPY", "npy"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MATLAB 5.0", "mat"),
)


def sniff(path: Path) -> str | None:
    """The format by content: ``hdf5``, ``npz``, ``bz2``, ``npy``, ``tiff``, ``mat``."""
    with wrap_errors(path, None, "reading the file header"), open(path, "rb") as fh:
        head = fh.read(16)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if h5py.is_hdf5(path):  # HDF5 with a user block (MATLAB v7.3 has 512 bytes)
        return "hdf5"
    return None


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if path.is_dir():
        return "tiff"
    for ext, kind in ((".cxi", "cxi"), (".npz.bz2", "npz"), (".npz", "npz"), (".npy", "npy"),
                      (".tif", "tiff"), (".tiff", "tiff"), (".mat", "mat"), (".h5", "hdf5"),
                      (".hdf5", "hdf5"), (".nxs", "hdf5"), (".emd", "hdf5")):  # fmt: skip
        if name.endswith(ext):
            return kind
    s = sniff(path)
    return "npz" if s == "bz2" else s


def read_any(path: str | os.PathLike, **options):
    """Read any supported file (see module docstring); ``options`` go to the reader."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file does not exist")
    try:
        return _read(path, options)
    except DataError as exc:
        raise _misnamed(path, exc) from exc
    except (TypeError, ValueError) as exc:  # a reader option of the wrong kind or name
        if not options:
            raise
        raise DataError(path, "options", f"reader options {sorted(options)}: "
                        f"{type(exc).__name__}: {exc}") from exc


# what an extension promises, by content (sniff): a CXI, a MATLAB v7.3 .mat and an .h5 are
# all HDF5; a .npz.bz2 is bz2
_CONTENT = {"cxi": {"hdf5"}, "hdf5": {"hdf5"}, "mat": {"mat", "hdf5"}, "npz": {"npz", "bz2"},
            "npy": {"npy"}, "tiff": {"tiff"}}


def _misnamed(path: Path, exc: DataError) -> DataError:
    """``exc``, told where the file's content is another format than its name says (a CXI
    saved as ``.npz`` failed with "File is not a zip file")."""
    kind = _kind(path)
    try:
        found = None if path.is_dir() else sniff(path)
    except DataError:
        return exc
    if kind is None or found is None or found in _CONTENT.get(kind, {found}):
        return exc
    ext = {"hdf5": ".cxi or .h5", "npz": ".npz", "bz2": ".npz.bz2", "npy": ".npy",
           "tiff": ".tif", "mat": ".mat"}.get(found, found)  # fmt: skip
    return DataError(path, exc.field, f"{exc.message} (the file's content is {found}, not "
                     f"{kind} as its name says: rename it {ext})")


def _read(path: Path, options: dict):
    kind = _kind(path)
    # readers are imported on demand: each pulls in its own libraries (scipy, tifffile)
    simple = {"cxi": "read_cxi", "npz": "read_npz", "tiff": "read_tiff", "mat": "read_fpm_mat"}
    if kind in simple:
        return __getattr__(simple[kind])(path, **options)
    if kind == "npy":
        import numpy as np

        with wrap_errors(path, None, "reading the npy header"):
            ndim = np.load(path, mmap_mode="r", allow_pickle=False).ndim
        return __getattr__("read_stem4d" if ndim == 4 else "read_npy")(path, **options)
    if kind == "hdf5":
        if "mapping" in options:
            return __getattr__("read_hdf5")(path, **options)
        from storage.readers.stem4d import find_4d_dataset

        with wrap_errors(path, None, "opening the HDF5 file"), h5py.File(path, "r") as f:
            is_cxi = "entry_1" in f
            four_d = None if is_cxi else find_4d_dataset(f)
        if is_cxi:
            return __getattr__("read_cxi")(path, **options)
        if four_d is not None:
            options.setdefault("dataset", four_d)
            return __getattr__("read_stem4d")(path, **options)
        raise DataError(path, None, "HDF5 file is neither CXI nor 4D-STEM: pass mapping= "
                        "(see storage.readers.hdf5_generic)")  # fmt: skip
    raise DataError(path, None, "unrecognised format (supported: CXI/HDF5, NPY/NPZ, TIFF, MAT)")


def __getattr__(name: str):  # lazy re-exports keep `import storage.readers` cheap
    mods = {"read_cxi": "storage.cxi", "read_npz": "storage.readers.npz",
            "read_npy": "storage.readers.npz", "read_stem4d": "storage.readers.stem4d",
            "read_tiff": "storage.readers.tiff", "read_fpm_mat": "storage.readers.fpm_mat",
            "read_hdf5": "storage.readers.hdf5_generic"}  # fmt: skip
    if name in mods:
        import importlib

        return getattr(importlib.import_module(mods[name]), name)
    raise AttributeError(name)
