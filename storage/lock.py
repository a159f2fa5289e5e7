"""One writer per run store: an exclusive, OS-released lock beside the store.

A run (``ptyflow run``, ``ptyflow ingest``, the ``pipeline`` flow of a deployment) holds
:class:`StoreLock` on its store for its whole duration; a second run into the same store
is refused with :class:`StoreLockedError`, whose message names the holder (host, pid,
start time, command). The Dask workers of the holding run write tiles without taking the
lock: they are part of the run that holds it.

The lock is ``fcntl.flock`` on ``<store>.lock`` (beside the store, so that replacing the
store never removes the lock of a run writing it). The operating system drops a flock
when its holder exits in any way, SIGKILL included, so a stale lock -- a record naming a
process that is gone -- is taken over by the next run without any clean-up. The holder
record is JSON inside the same file, written only while the flock is held. (The
``filelock`` package truncates the lock file on every attempt, which would erase the record
the refused writer needs to read, hence ``fcntl`` directly.) Local file systems and NFSv4
(Linux maps flock to byte-range locks there) both honour it.

Re-entrant within one process: a flow started by a command that already holds the lock
takes it again without blocking itself.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

from storage import trash

__all__ = ["StoreLock", "StoreLockedError", "holder", "lock_path"]

# {resolved lock path: [fd, depth, pid]}: the flocks this process holds (re-entrancy).
_HELD: dict[str, list[int]] = {}
_GUARD = threading.Lock()


class StoreLockedError(RuntimeError):
    """Another run holds the store's lock.

    Attributes
    ----------
    store : str
        The run store.
    holder : dict
        The holder's record: ``host``, ``pid``, ``started`` (ISO 8601, UTC), ``command``
        (empty when the holder has not written it yet).
    """

    def __init__(self, store: str | os.PathLike, holder: dict):
        self.store = os.fspath(store)
        self.holder = dict(holder)
        h = self.holder
        who = (f"host {h.get('host', '?')}, pid {h.get('pid', '?')}, started "
               f"{h.get('started', '?')}, command {h.get('command', '?')!r}")  # fmt: skip
        super().__init__(
            f"{self.store}: run store is locked by another run ({who}); wait for it to "
            f"finish or stop it, or write to another store"
        )

    def __reduce__(self):
        # Picklable across Prefect/Dask boundaries with its fields intact.
        return (type(self), (self.store, self.holder))


def lock_path(store: str | os.PathLike) -> Path:
    """``<store>.lock``: the lock file of the run store ``store``, links resolved.

    ``realpath``, not ``abspath``: a store reached through a symbolic link (to it or to a
    folder above it) has the one lock of the store it leads to, so two writers naming the
    same store by different paths still exclude each other."""
    return Path(os.path.realpath(os.fspath(store)).rstrip(os.sep) + ".lock")


def _read_record(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 1 << 16, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def holder(store: str | os.PathLike) -> dict | None:
    """The record of the run holding the lock on ``store``; ``None`` when it is free."""
    path = lock_path(store)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_record(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)  # (a new open conflicts with this process's own lock)
        return None
    finally:
        os.close(fd)


class StoreLock:
    """Exclusive lock on a run store, held from ``acquire`` (or ``with``) to ``release``.

    Parameters
    ----------
    store : path-like
        The run store (need not exist yet).
    command : str, optional
        What holds the lock, shown to a refused writer; default this process's argv.
    """

    def __init__(self, store: str | os.PathLike, command: str | None = None):
        self.store = Path(store)
        self.path = lock_path(store)
        self.command = command if command is not None else shlex.join(sys.argv)
        self._held = False

    def acquire(self) -> StoreLock:
        """Take the lock, or raise :class:`StoreLockedError` naming the holder."""
        key = str(self.path)
        with _GUARD:
            held = _HELD.get(key)
            if held is not None and held[2] == os.getpid():
                held[1] += 1
                self._held = True
                return self
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # No O_TRUNC: the record of a live holder must survive a refused attempt.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # an unwritable folder, a file where a folder should be
                from storage.errors import DataError

                raise DataError(self.store, None, f"cannot create the run store's lock file "
                                f"{self.path}: {exc.strerror or exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                record = _read_record(fd)
                for _ in range(20):  # the holder may be between flock and its record
                    if record:
                        break
                    time.sleep(0.05)
                    record = _read_record(fd)
                os.close(fd)
                raise StoreLockedError(self.store, record) from None
            record = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "command": self.command,
                "store": os.path.abspath(self.store),
            }
            data = json.dumps(record).encode()
            os.ftruncate(fd, 0)  # a stale record of a dead holder is replaced here
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            _HELD[key] = [fd, 1, os.getpid()]
            self._held = True
        # the holder is the store's only writer: bins a killed writer left are garbage
        trash.clear(self.store)
        return self

    def release(self) -> None:
        """Give the lock back (the outermost release of this process drops the flock)."""
        if not self._held:
            return
        self._held = False
        key = str(self.path)
        with _GUARD:
            held = _HELD.get(key)
            if held is None or held[2] != os.getpid():
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[key]
            fd = held[0]
            try:
                os.ftruncate(fd, 0)  # a free lock carries no holder
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
