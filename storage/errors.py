"""The one exception type storage raises for bad input data.

Every reader and validator reports problems as :class:`DataError`, naming the file and the
field, so a user sees *which* file and *which* dataset is wrong instead of a raw h5py,
numpy, scipy or zarr traceback. :func:`wrap_errors` converts the errors those libraries
raise while reading into ``DataError`` (chained, so the original stays visible with
``raise ... from``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["DataError", "wrap_errors"]


class DataError(ValueError):
    """Invalid, inconsistent or unreadable input data.

    Parameters
    ----------
    file : str or os.PathLike or None
        The file (or store) the data came from; ``None`` for in-memory data.
    field : str or None
        The dataset, key or attribute at fault (e.g. ``"entry_1/data_1/data"``,
        ``"wavelength"``).
    message : str
        What is wrong and, where possible, how to fix it.
    """

    def __init__(self, file: str | os.PathLike | None, field: str | None, message: str):
        self.file = None if file is None else os.fspath(file)
        self.field = field
        self.message = message
        where = self.file if self.file is not None else "<in-memory data>"
        what = f" [{field}]" if field else ""
        super().__init__(f"{where}{what}: {message}")

    def __reduce__(self):
        # Picklable across Dask/multiprocessing boundaries with all three fields intact.
        return (type(self), (self.file, self.field, self.message))


# Errors the reading libraries raise for corrupt, truncated or mistyped content (corrupt
# headers can surface as arithmetic errors, failed internal assertions or absurd
# allocations). Plain programming errors (NameError, AttributeError on our own objects)
# are deliberately not listed, so that bugs are not disguised as data problems.
_WRAPPED: tuple[type[BaseException], ...] = (
    OSError,
    LookupError,
    ValueError,
    TypeError,
    EOFError,
    RuntimeError,
    ArithmeticError,
    AssertionError,
    MemoryError,
    NotImplementedError,
)


def _library_errors() -> tuple[type[BaseException], ...]:
    """Error classes of the reading libraries that do not derive from the builtins above."""
    import struct
    import zipfile
    import zlib

    found: list[type[BaseException]] = [zipfile.BadZipFile, struct.error, zlib.error]
    for mod, name in (
        ("zarr.errors", "BaseZarrError"),
        ("scipy.io.matlab", "MatReadError"),
        ("tifffile", "TiffFileError"),
    ):
        try:
            found.append(getattr(__import__(mod, fromlist=[name]), name))
        except Exception:  # noqa: BLE001 - optional library or older version
            pass
    return tuple(found)


@contextlib.contextmanager
def wrap_errors(file, field: str | None = None, what: str = "reading") -> Iterator[None]:
    """Turn library errors raised inside the block into :class:`DataError`.

    ``DataError`` itself passes through unchanged.
    """
    try:
        yield
    except DataError:
        raise
    except _WRAPPED + _library_errors() as exc:  # noqa: B030 - tuple built at runtime
        raise DataError(file, field, f"{what} failed: {type(exc).__name__}: {exc}") from exc
