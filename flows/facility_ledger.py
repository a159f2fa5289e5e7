"""The facility ledger ``<output_root>/ptyflow-facility.json``: one entry per dataset.

Every change is one read-merge-write of the whole file under a file lock, written to a
temporary file, flushed to disk and renamed over the ledger (``os.replace``), entry by entry
as datasets start and finish: a kill at any moment leaves the previous or the next ledger,
never half of one, and loses no finished dataset's record. Two processes updating it (a
manual run beside the scheduled one) merge rather than overwrite each other's entries.

Entry ``status``: ``running`` (an attempt is under way; its ``host``/``pid`` say where),
``ok``, ``failed`` (the pipeline raised; ``error`` says why), ``died`` (the process running
it vanished mid-attempt: killed, out of memory). ``attempts`` counts attempts at the same
content, parameters and version. A ledger that cannot be read is set aside as
``ptyflow-facility.json.corrupt-<UTC time>`` with a warning and rebuilt.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
from pathlib import Path

from filelock import FileLock

LEDGER = "ptyflow-facility.json"
ERROR_CHARS = 2000  # errors are kept this long (their start: type and message)
log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def process_identity(pid: int) -> str | None:
    """``<boot id>:<start time>`` of process ``pid`` (Linux), else None: a pid the kernel
    reuses after the recorded process ended -- after a reboot above all -- has another
    identity, so a dead attempt is not taken for a live one."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        stat = open(f"/proc/{pid}/stat").read()
        start = stat[stat.rindex(")") + 2 :].split()[19]  # field 22, after the name
    except (OSError, ValueError, IndexError):
        return None
    return f"{boot}:{start}"


def is_live(entry: dict) -> bool:
    """A ``running`` entry of another process on this host that still exists (the same
    process, where the entry recorded its identity)."""
    pid = entry.get("pid")
    if not (entry.get("status") == "running" and isinstance(pid, int) and pid != os.getpid()
            and entry.get("host") == socket.gethostname() and _pid_alive(pid)):  # fmt: skip
        return False
    recorded = entry.get("process")
    return recorded is None or process_identity(pid) in (None, recorded)


class Ledger:
    """The facility's JSON ledger: per-dataset, atomic, crash-safe updates.

    Parameters
    ----------
    output_root : path
        Folder of the ledger (created on the first write).

    Attributes
    ----------
    entries : dict
        ``{dataset name: entry}`` as last read or written.
    set_aside : list of Path
        Unreadable ledgers this object renamed away.
    """

    def __init__(self, output_root: str | Path):
        self.path = Path(output_root) / LEDGER
        self._lock = threading.Lock()  # threads of this process; the file lock: processes
        self.set_aside: list[Path] = []
        self.entries: dict = self._read()

    # ------------------------------------------------------------------ reading
    def _read(self) -> dict:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            return self._set_aside(f"unreadable: {exc}")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            return self._set_aside(f"not valid JSON ({exc}); truncated?")
        if not isinstance(doc, dict):
            return self._set_aside("top level is not a mapping")
        bad = [k for k, v in doc.items() if not isinstance(v, dict)]
        for k in bad:  # one mangled entry costs that dataset a re-run, not the ledger
            log.warning("%s: entry %r is not a mapping: dropped", self.path, k)
            del doc[k]
        return doc

    def _set_aside(self, why: str) -> dict:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, target)
        except FileNotFoundError:  # another process set it aside first
            return {}
        self.set_aside.append(target)
        log.warning("%s %s: set aside as %s; the ledger is rebuilt (datasets are re-checked "
                    "against their run stores)", self.path, why, target.name)  # fmt: skip
        return {}

    # ------------------------------------------------------------------ writing
    def update(self, name: str, entry: dict) -> None:
        """Set one dataset's entry: merge with the file on disk, write atomically."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{self.path}.lock", timeout=120):
                disk = self._read()
                # ours first, then the disk's (another process may be newer), then this one
                self.entries = {**self.entries, **disk, name: entry}
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                with open(tmp, "w") as fh:
                    json.dump(self.entries, fh, indent=1, sort_keys=True)
                    fh.flush()
                    os.fsync(fh.fileno())  # the data is on disk before the rename is
                os.replace(tmp, self.path)  # readers never see a half-written ledger

    def _entry(self, d, version: str, status: str, attempts: int) -> dict:
        return {"fingerprint": d.fingerprint, "params": d.params_fp, "version": version,
                "status": status, "attempts": attempts, "store": d.store,
                **(d.source or {})}  # fmt: skip

    def attempts_before(self, d, version: str) -> int:
        """Attempts already made at ``d``'s content, parameters and version (0 if changed)."""
        e = self.entries.get(d.name, {})
        same = (e.get("fingerprint"), e.get("params"), e.get("version")) == (
            d.fingerprint, d.params_fp, version)  # fmt: skip
        n = e.get("attempts", 1)
        return n if same and isinstance(n, int) else 0

    def start(self, d, version: str) -> None:
        """Record that an attempt at dataset ``d`` (a ``Decision``) begins in this process."""
        entry = self._entry(d, version, "running", self.attempts_before(d, version) + 1)
        entry.update(started=_now(), host=socket.gethostname(), pid=os.getpid(),
                     **({"process": p} if (p := process_identity(os.getpid())) else {}))
        self.update(d.name, entry)

    def record(self, d, status: str, version: str, error: str = "") -> None:
        """Record the outcome of ``d``: ``ok`` or ``failed`` with ``error``."""
        prev = self.entries.get(d.name, {})
        attempts = (prev.get("attempts", 1) if prev.get("status") == "running"
                    else self.attempts_before(d, version) + 1)  # fmt: skip
        entry = self._entry(d, version, status, attempts)
        entry.update(error=error[:ERROR_CHARS] if status != "ok" else "", finished=_now(),
                     **({"started": prev["started"]} if "started" in prev else {}))  # fmt: skip
        self.update(d.name, entry)

    def reap(self) -> list[str]:
        """Mark ``running`` entries whose process is gone as ``died``; their names.

        Call before a scan: a dataset left ``running`` by a killed or out-of-memory process
        is then a failure with a count, not a dataset forever in progress.
        """
        dead = [n for n, e in self.entries.items()
                if e.get("status") == "running" and not is_live(e)]  # fmt: skip
        for n in dead:
            e = dict(self.entries[n])
            e.update(status="died", finished=_now(),
                     error=f"the process running attempt {e.get('attempts', 1)} (pid "
                           f"{e.get('pid')} on {e.get('host')}, started {e.get('started')}) "
                           "ended without a result: killed, out of memory, or crashed")  # fmt: skip
            self.update(n, e)
        return dead
