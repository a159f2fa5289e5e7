"""Removing store content without ever showing readers half of it: move aside, then delete.

A replaced step's group, or a whole store opened with ``mode="w"``, is first moved by one
``rename`` into ``<real store>.trash/<bin>/`` and deleted from there, so a reader finds the
old content whole or not at all -- never arrays whose chunks are gone and read back as fill
values under a surviving completion marker.

The trash sits beside the store's *real* path (links resolved, as the lock does), so the
rename stays on the store's file system when the store is a link onto scratch space. Where
no rename is possible (a read-only folder above the store, another file system), the
content is deleted in place: its step has already lost its marker, so nothing reads it as
complete. Bins left by a writer killed between the rename and the deletion are removed when
the next run takes the store's lock (:func:`clear`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["clear", "discard", "move_aside", "remove_store", "trash_dir"]

# A rename that cannot happen here; anything else is a real error
_NO_RENAME = {errno.EXDEV, errno.EACCES, errno.EPERM, errno.EROFS}


def trash_dir(store: str | os.PathLike) -> Path:
    """``<store>.trash``, beside the store's real path (links resolved)."""
    return Path(os.path.realpath(os.fspath(store)).rstrip(os.sep) + ".trash")


def move_aside(store: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """Move ``path`` (the store ``store`` or something in it) into a fresh bin of the
    store's trash by one rename.

    Returns the bin (delete it with :func:`discard`), or ``None`` where no rename is
    possible here; the caller then deletes ``path`` in place.
    """
    trash = trash_dir(store)
    for _ in range(3):
        try:
            trash.mkdir(exist_ok=True)
            bin_ = Path(tempfile.mkdtemp(dir=trash))
        except FileNotFoundError:  # another writer removed the emptied trash in between
            continue
        except OSError as exc:
            if exc.errno in _NO_RENAME:
                return None
            raise
        try:
            os.rename(path, bin_ / "content")
        except OSError as exc:
            with contextlib.suppress(OSError):
                bin_.rmdir()
            if exc.errno in _NO_RENAME:
                return None
            raise
        return bin_
    return None


def discard(bin_: Path) -> None:
    """Delete a bin made by :func:`move_aside`, and the trash once it is empty."""
    shutil.rmtree(bin_, ignore_errors=True)
    with contextlib.suppress(OSError):  # another writer's bin may still be in it
        bin_.parent.rmdir()


def remove_store(store: str | os.PathLike) -> None:
    """Delete the store ``store`` (moved aside first); a store reached through a link keeps
    its link, to a new empty folder."""
    real = Path(os.path.realpath(os.fspath(store)))
    bin_ = move_aside(store, real)
    if bin_ is None:
        shutil.rmtree(real)
    else:
        discard(bin_)
    if Path(store).is_symlink():
        real.mkdir()


def clear(store: str | os.PathLike) -> None:
    """Delete what earlier writers left in the store's trash (called by the store's lock
    holder, the store's only writer)."""
    shutil.rmtree(trash_dir(store), ignore_errors=True)
