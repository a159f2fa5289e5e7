"""``.npy`` arrays read from disk a row range at a time, in plain files and ``.npz`` archives.

NumPy's own ``mmap_mode`` maps the whole file: every page a streamed copy touches stays
resident, so a process's peak RSS grows to the file's size. :class:`NpyArray` reads rows with
``os.pread`` instead, so a copy holds one block. A ``.npz`` member stored without
compression (``np.savez``) is read the same way in place; a deflated member is read whole
(its bytes cannot be addressed). A ``.npz.bz2`` archive is first decompressed as a stream to
an anonymous temporary file (``tempfile.TemporaryFile`` in ``$TMPDIR``, removed when the last
array referring to it is gone), never into memory.

Nothing is ever unpickled: arrays of Python objects are refused.
"""

from __future__ import annotations

import bz2
import os
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from storage.errors import DataError, wrap_errors

__all__ = ["NpyArray", "open_npy", "open_npz"]

_COPY_BLOCK = 2**20  # bytes per read while decompressing a .bz2 stream


class NpyArray:
    """A C-ordered array at byte ``offset`` of an open binary file, read on demand.

    Parameters
    ----------
    fh : binary file object
        Kept open (and referenced) as long as this array lives.
    offset : int
        Byte offset of element ``[0, ..., 0]``.
    shape : tuple of int
    dtype : numpy dtype

    Indexing with an integer or a unit-step slice along the first axis reads just those
    rows (further indices apply to the result); ``np.asarray`` reads everything.
    """

    def __init__(self, fh, offset: int, shape, dtype):
        self._fh, self._offset = fh, int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (clipped to the array) as a new in-memory array."""
        n = self.shape[0] if self.ndim else 1
        start, stop = max(0, start), min(n, max(start, stop))
        rows = (stop - start) if self.ndim else 1
        out = np.empty((rows, *self.shape[1:]) if self.ndim else (), self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos, done = self._offset + start * self._row_bytes(), 0
        while done < len(view):  # straight into the array: no second copy of the bytes
            got = os.preadv(self._fh.fileno(), [view[done:]], pos + done)
            if got == 0:
                raise EOFError(f"file truncated: {done} of {len(view)} bytes at row {start}")
            done += got
        return out

    def squeeze_leading(self, ndim: int) -> NpyArray:
        """Drop leading length-1 axes down to ``ndim`` dimensions (nothing is read)."""
        shape = self.shape
        while len(shape) > ndim and shape[0] == 1:
            shape = shape[1:]
        return NpyArray(self._fh, self._offset, shape, self.dtype)

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)) and self.ndim:
            i = int(key) + self.shape[0] if key < 0 else int(key)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"index {key} out of range for {self.shape[0]} rows")
            out = self.rows(i, i + 1)[0]
        elif isinstance(key, slice) and self.ndim and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            out = self.rows(start, stop)
        else:  # fancy or strided indexing: small arrays only (positions, probes)
            return np.asarray(self)[(key, *rest)]
        return out[rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self.rows(0, self.shape[0] if self.ndim else 1)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"NpyArray(shape={self.shape}, dtype={self.dtype})"


def _header(fh, path, field) -> tuple[tuple, bool, np.dtype]:
    """Read the ``.npy`` header at ``fh``'s position (left at the data)."""
    fmt = np.lib.format
    with wrap_errors(path, field, "reading the npy header"):
        version = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(fh)
    if dtype.hasobject:
        raise DataError(path, field, "holds Python objects; refusing to unpickle them")
    return shape, fortran, dtype


def open_npy(path: str | os.PathLike) -> NpyArray | np.ndarray:
    """The array of a ``.npy`` file, left on disk (Fortran order: read whole)."""
    path = Path(path)
    with wrap_errors(path, None, "opening the npy file"):
        fh = open(path, "rb")  # noqa: SIM115 - kept open by the returned array
    shape, fortran, dtype = _header(fh, path, None)
    if fortran:
        with fh, wrap_errors(path, None, "reading the npy file"):
            return np.load(path, allow_pickle=False)
    return _checked(NpyArray(fh, fh.tell(), shape, dtype), path, None)


def _checked(a: NpyArray, path, field) -> NpyArray:
    end = a._offset + a.nbytes
    size = os.fstat(a._fh.fileno()).st_size
    if end > size:  # a declared shape larger than the file: truncated or forged
        raise DataError(path, field, f"declares shape {a.shape} {a.dtype} ({a.nbytes} bytes) "
                        f"but the file ends {end - size} bytes short (truncated?)")  # fmt: skip
    return a


def _decompress(path: Path):
    """``path`` (bz2) decompressed as a stream into an anonymous temporary file."""
    tmp = tempfile.TemporaryFile(prefix="ptyflow-npz-")  # noqa: SIM115 - returned open
    try:
        with wrap_errors(path, None, "decompressing the bz2 archive"), bz2.open(path, "rb") as src:
            shutil.copyfileobj(src, tmp, _COPY_BLOCK)
        tmp.flush()
        tmp.seek(0)
    except BaseException:
        tmp.close()
        raise
    return tmp


def open_npz(path: str | os.PathLike) -> dict[str, NpyArray | np.ndarray]:
    """Every array of a ``.npz`` (or ``.npz.bz2``) archive; stored members stay on disk.

    A ``.bz2`` archive that holds a single ``.npy`` (not a zip) gives ``{"data": array}``.
    """
    path = Path(path)
    if path.name.lower().endswith(".bz2"):
        fh = _decompress(path)
    else:
        with wrap_errors(path, None, "opening the npz archive"):
            fh = open(path, "rb")  # noqa: SIM115 - kept open by the returned arrays
    with wrap_errors(path, None, "reading the npz archive"):
        head = fh.read(6)
        fh.seek(0)
    if head == b"\x93NUMPY":  # a bare .npy inside the .bz2
        shape, fortran, dtype = _header(fh, path, None)
        if fortran:
            return {"data": np.asarray(np.lib.format.read_array(fh, allow_pickle=False))}
        return {"data": _checked(NpyArray(fh, fh.tell(), shape, dtype), path, None)}
    out: dict[str, NpyArray | np.ndarray] = {}
    with wrap_errors(path, None, "reading the npz archive"):
        zf = zipfile.ZipFile(fh)
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            if info.compress_type == zipfile.ZIP_STORED:
                # data follow the local header: 30 fixed bytes, then name and extra field
                fh.seek(info.header_offset)
                local = fh.read(30)
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                fh.seek(info.header_offset + 30 + name_len + extra_len)
                shape, fortran, dtype = _header(fh, path, key)
                if not fortran:
                    out[key] = _checked(NpyArray(fh, fh.tell(), shape, dtype), path, key)
                    continue
            with zf.open(info) as member:  # deflated: read whole (object arrays refused)
                out[key] = np.lib.format.read_array(member, allow_pickle=False)
    return out
