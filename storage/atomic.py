"""Atomic, resumable steps: fingerprints and completion markers.

A *step* is one group of the run store (``raw``, ``reconstruct/tile_003``, ...). It is
written in three phases:

1. any old completion marker is replaced by the flag ``ptyflow_writing`` (one atomic
   rewrite of the group's ``zarr.json``), the old group is moved out of the store (one
   rename) and deleted, and the group is created anew carrying the flag;
2. the step writes its arrays;
3. the marker ``ptyflow_step`` replaces the flag in the group's attributes -- again one
   atomic rewrite of ``zarr.json`` (Zarr's local store writes to a temporary file and
   renames).

A reader that finds the marker therefore sees every array of the step in full; a writer
killed at any point leaves no marker, and a re-run starts the step afresh. A reader that
overlaps a rewrite notices that the marker changed (:func:`read_whole`, behind
``RunStore.read_array``/``read_group``/``read_raw``), so it gets the old or the new step,
whole.

The marker holds the step's own fingerprint (a hash of its inputs and parameters) and the
*keys* of the steps it depends on. A step's key hashes its fingerprint together with its
upstream keys, so changing one parameter changes the key of that step and of everything
downstream of it -- and of nothing upstream.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import PurePath
from typing import Any, Protocol

import numpy as np

from storage.errors import DataError
from storage.layout import STEP_ATTR


class StepStore(Protocol):
    """What a step needs of its store (:class:`storage.store.RunStore` provides it); a
    protocol, so this module does not import the store that imports it."""

    path: Any
    root: Any

    def is_complete(self, name: str, fingerprint_=None) -> bool: ...
    def marker(self, name: str) -> dict | None: ...
    def group(self, name: str) -> Any: ...
    def write_array(self, group: str, name: str, array, **kw) -> Any: ...
    def reset_group(self, name: str, attrs=None) -> None: ...

#: Attribute of a step group while it is being written (host, pid, start); readers of its
#: arrays wait or fail instead of reading half a step. Replaced by the marker.
WRITING_ATTR = "ptyflow_writing"


def _who() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "at": _dt.datetime.now(_dt.UTC).isoformat()}  # fmt: skip


__all__ = ["fingerprint", "file_digest", "Step", "read_whole"]

# A read that overlaps a rewrite of its step is retried: 50 x 20 ms covers the marker and
# small arrays being rewritten; longer rewrites give a DataError, never a half step.
_READ_TRIES, _READ_PAUSE = 50, 0.02


def enclosing_step(store: StepStore, path: str) -> tuple[str | None, dict | None]:
    """``(step, marker)`` of the innermost step group holding ``path`` (the group itself or
    an ancestor): ``marker`` is None while the step is being written; ``(None, None)``
    outside any step or when nothing is there."""
    import zarr

    parts = path.strip("/").split("/")
    for i in range(len(parts), 0, -1):
        p = "/".join(parts[:i])
        try:
            g = store.root[p]
        except KeyError:
            continue
        if isinstance(g, zarr.Group):
            a = g.attrs.asdict()
            if STEP_ATTR in a or WRITING_ATTR in a:
                return p, a.get(STEP_ATTR)
    return None, None


def read_whole(store: StepStore, path: str, read: Callable):
    """``read()`` of data under ``path`` as one complete version of its step (a seqlock).

    The writer replaces a step's marker before touching its arrays, moves the old group out
    by one rename, and writes the new marker last; so a read bracketed by two looks at the
    same marker saw one whole version. A read that overlapped a rewrite, or a step being
    written, is retried every 20 ms for up to ~1 s, then raises ``DataError``. Errors of
    the read itself (a missing array) are raised when the step did not change meanwhile.
    """
    step = None
    for _ in range(_READ_TRIES):
        before = enclosing_step(store, path)
        try:
            value, error = read(), None
        except Exception as exc:  # noqa: BLE001 - judged by the re-check below
            value, error = None, exc
        after = enclosing_step(store, path)
        step = before[0]
        if after == before and (step is None or before[1] is not None):
            if error is not None:
                raise error
            return value  # one complete version (or data outside any step)
        time.sleep(_READ_PAUSE)
    raise DataError(store.path, step, "step is incomplete: being written by a run, or left "
                    "incomplete by a failed one (run again to redo it)")  # fmt: skip


def _feed(h, v) -> None:
    if isinstance(v, np.ndarray) or (hasattr(v, "__array__") and hasattr(v, "shape")):
        a = np.ascontiguousarray(np.asarray(v))
        h.update(f"nd:{a.dtype.str}:{a.shape}:".encode())
        h.update(a.tobytes())
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        h.update(f"dc:{type(v).__name__}:".encode())
        for f in dataclasses.fields(v):
            h.update(f.name.encode())
            _feed(h, getattr(v, f.name))
    elif isinstance(v, dict):
        h.update(b"{")
        for k in sorted(v, key=str):
            h.update(str(k).encode() + b":")
            _feed(h, v[k])
        h.update(b"}")
    elif isinstance(v, (list, tuple)):
        h.update(b"[")
        for x in v:
            _feed(h, x)
        h.update(b"]")
    elif isinstance(v, float):
        h.update(f"f:{v!r}".encode())  # repr is exact for floats
    elif isinstance(v, (np.generic,)):
        _feed(h, v.item())
    elif isinstance(v, PurePath):
        h.update(f"path:{os.fspath(v)}".encode())
    else:
        h.update(f"{type(v).__name__}:{json.dumps(v, default=str)}".encode())


def fingerprint(*parts) -> str:
    """Hex SHA-256 of ``parts``: numbers, strings, paths, dicts, lists, arrays, dataclasses.

    Dict order does not matter; float values are hashed exactly (``repr``).
    """
    h = hashlib.sha256()
    for p in parts:
        _feed(h, p)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def step_key(own: str, upstream: dict[str, str]) -> str:
    """The key of a step: its fingerprint plus the keys of its direct upstream steps."""
    return fingerprint(own, dict(sorted(upstream.items())))


class Step:
    """Context manager for writing one step; obtained from :meth:`RunStore.step`.

    Attributes
    ----------
    name : str
        Group path of the step.
    done : bool
        True when the step was already complete with the same key: the body should skip
        its work (writes raise).
    key : str
        Fingerprint of this step and all of its upstream steps.
    """

    def __init__(self, store: StepStore, name: str, fp, depends_on: Iterable[str] = ()):
        self.store = store
        self.name = name.strip("/")
        self.fingerprint = fp if isinstance(fp, str) else fingerprint(fp)
        self.depends_on = tuple(depends_on)
        self.done = False
        self.key = ""
        self._upstream: dict[str, str] = {}

    def __enter__(self) -> Step:
        for dep in self.depends_on:
            if not self.store.is_complete(dep):
                raise DataError(
                    self.store.path,
                    dep,
                    f"step {self.name!r} depends on {dep!r}, which is not complete (run it first)",
                )
            self._upstream[dep] = self.store.marker(dep)["key"]
        self.key = step_key(self.fingerprint, self._upstream)
        m = self.store.marker(self.name)
        if m is not None and m.get("key") == self.key and self.store.is_complete(self.name):
            self.done = True
            return self
        self.store.reset_group(self.name, {WRITING_ATTR: _who()})
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and not self.done:
            w = _who()
            marker = {"fingerprint": self.fingerprint, "key": self.key,
                      "depends_on": self._upstream, "completed_at": w["at"],
                      "host": w["host"], "pid": w["pid"]}  # fmt: skip
            attrs = self.store.group(self.name).attrs
            new = {k: v for k, v in attrs.asdict().items() if k != WRITING_ATTR}
            # Written last: one atomic rewrite of the group's zarr.json (marker in, the
            # "being written" flag out).
            attrs.put({**new, STEP_ATTR: marker})
        return False

    # Convenience pass-throughs, refusing writes into a step that is already complete.
    def _check(self) -> None:
        if self.done:
            raise RuntimeError(f"step {self.name!r} is already complete; skip its body")

    def write_array(self, name: str, array, dims=None, **kw):
        """:meth:`RunStore.write_array` into this step's group."""
        self._check()
        return self.store.write_array(self.name, name, array, dims=dims, **kw)

    def set_attrs(self, **attrs) -> None:
        """Add JSON-compatible attributes to the step group (before completion)."""
        self._check()
        self.store.group(self.name).attrs.update(attrs)

    @property
    def group(self):
        return self.store.group(self.name)
