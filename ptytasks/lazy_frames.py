"""Frames that stay on disk until sliced, so big stacks stream in blocks.

A reader called with ``lazy=True`` (``storage.readers``) puts a :class:`LazyFrames` into
``PtychoData.frames``; :meth:`storage.store.RunStore.write_raw` then copies it block by
block, so peak memory is one block, not the whole stack.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["LazyFrames"]


class LazyFrames:
    """A read-only ``(scan, det_y, det_x)`` float32 array backed by a block getter.

    Parameters
    ----------
    getter : callable ``(start, stop) -> ndarray``
        Returns frames ``start:stop`` as float32 ``(stop-start, det_y, det_x)``, already
        transformed to the run-store convention (centred, counts).
    shape : (int, int, int)
    source_dtype : numpy dtype
        The dtype on disk (validation of integer data can skip the NaN scan).
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, getter: Callable[[int, int], np.ndarray], shape, source_dtype=np.float32):
        self._get = getter
        self.shape = tuple(int(s) for s in shape)
        self.source_dtype = np.dtype(source_dtype)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"frame {key} out of range for {n} frames")
            out = self._get(i, i + 1)[0]
        elif isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                out = self._get(start, max(start, stop))
            else:
                out = np.stack([self._get(i, i + 1)[0] for i in range(start, stop, step)])
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            out = np.stack([self._get(int(i), int(i) + 1)[0] for i in idx.ravel()])
        return out[(slice(None),) * (out.ndim - 2) + rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self._get(0, self.shape[0])
        return out if dtype is None else out.astype(dtype)

    def take(self, indices) -> LazyFrames:
        """A lazy view of frames ``indices`` (nothing is read now)."""
        idx = np.asarray(indices, dtype=np.int64)
        parent = self

        def get(s: int, e: int) -> np.ndarray:
            sel = idx[s:e]
            if sel.size and np.all(np.diff(sel) == 1):  # one contiguous read
                return parent._get(int(sel[0]), int(sel[-1]) + 1)
            return parent[sel] if sel.size else np.empty((0, *parent.shape[1:]), np.float32)

        return LazyFrames(get, (idx.size, *self.shape[1:]), self.source_dtype)

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> LazyFrames:
        """A lazy view of the detector region ``[y0:y1, x0:x1]`` of every frame; frames are
        read (and cropped) a block at a time, so memory stays bounded."""
        parent = self
        return LazyFrames(lambda s, e: parent._get(s, e)[:, y0:y1, x0:x1],
                          (self.shape[0], y1 - y0, x1 - x0), self.source_dtype)  # fmt: skip

    def iter_blocks(self, max_bytes: int = 64 * 2**20):
        """Yield ``(start, block)`` pairs of at most ``max_bytes`` each."""
        per = max(1, max_bytes // max(1, self.shape[1] * self.shape[2] * 4))
        for s in range(0, self.shape[0], per):
            yield s, self._get(s, min(self.shape[0], s + per))

    def __repr__(self) -> str:
        return f"LazyFrames(shape={self.shape}, source_dtype={self.source_dtype})"
