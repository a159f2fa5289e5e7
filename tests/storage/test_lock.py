"""One writer per run store (issue #22, item 4): a second writer, in another real process,
is refused with exit code 2 naming the holder; a holder that exits or is SIGKILLed frees
the lock; a reader concurrent with a writer gets one whole version of a step, never half."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from storage.errors import DataError
from storage.lock import StoreLock, StoreLockedError, holder, lock_path
from storage.store import RunStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}

_HOLDER = """
import sys, time
from storage.lock import StoreLock
StoreLock(sys.argv[1], command="holder-cmd --flag").acquire()
print("locked", flush=True)
if sys.argv[2] == "wait":
    time.sleep(120)
"""  # "exit": leave without releasing; the interpreter's exit closes the descriptor


def _start_holder(store, how: str = "wait") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store), how], env=ENV,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    assert proc.stdout.readline().strip() == "locked", "holder did not take the lock"
    return proc


def test_second_writer_exits_2_naming_the_holder_until_sigkill(tmp_path):
    store = tmp_path / "run.zarr"
    data = tmp_path / "scan.cxi"
    data.write_bytes(b"")  # the lock is checked before the input is read
    proc = _start_holder(store)
    try:
        rec = holder(store)
        assert rec["pid"] == proc.pid and rec["command"] == "holder-cmd --flag"
        # a real second `ptyflow run` process into the same store
        res = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(data), "-o",
                              str(store), "--cluster", "none"], env=ENV, cwd=REPO,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        for text in (str(store), "locked by another run", f"host {socket.gethostname()}",
                     f"pid {proc.pid}", f"started {rec['started']}", "holder-cmd --flag"):
            assert text in lines[0], (text, lines[0])
        # `ptyflow ingest` into it, in this process: the same one line, exit 2
        from typer.testing import CliRunner

        from flows.cli import app

        res = CliRunner().invoke(app, ["ingest", str(data), "-o", str(store)])
        assert res.exit_code == 2 and res.output.strip() == lines[0], res.output
        # in-process writers: the lock itself, and replacing the store (mode "w")
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"):
            StoreLock(store).acquire()
        store.mkdir()
        (store / "keep").write_text("x")
        with pytest.raises(StoreLockedError):
            RunStore(store, "w")
        assert (store / "keep").exists()  # nothing deleted under the holder
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
    # the record of the dead holder is still there: a stale lock, taken over
    assert f'"pid": {proc.pid}' in lock_path(store).read_text()
    with StoreLock(store, command="taker") as lk:
        rec = holder(store)
        assert rec["pid"] == os.getpid() and rec["command"] == "taker"
        with lk.__class__(store):  # re-entrant within this process
            pass
        assert holder(store)["pid"] == os.getpid()  # still held by the outer one
    assert holder(store) is None


def test_holder_that_exits_without_release_frees_the_lock(tmp_path):
    store = tmp_path / "run.zarr"
    proc = _start_holder(store, "exit")
    assert proc.wait(30) == 0
    with StoreLock(store):
        assert holder(store)["pid"] == os.getpid()


_WRITER = """
import sys, time
import numpy as np
from storage.store import RunStore
store = RunStore(sys.argv[1])
gen, t_end = 0, time.time() + float(sys.argv[2])
while time.time() < t_end:
    gen += 1
    with store.step("s", gen) as st:
        for name in ("a", "b"):  # 8 chunk files each: a reader can land between them
            st.write_array(name, np.full((256, 256), gen, np.float64), chunks=(32, 256))
        st.set_attrs(gen=gen)
    print(gen, flush=True)
    time.sleep(0.05)  # the rest of a run: a complete step stays readable for a while
"""


def test_reader_sees_whole_old_or_whole_new_step(tmp_path):
    """A second process rewrites step ``s`` (arrays ``a``, ``b`` and attribute ``gen``, all
    equal to a generation number) over and over; every read of it here is one generation."""
    path = tmp_path / "r.zarr"
    RunStore(path)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_WRITER), str(path), "4"],
                            env=ENV, cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "1"  # the first version is complete
    store = RunStore(path, "r")
    seen, refused, reads = set(), 0, 0
    try:
        while proc.poll() is None:
            try:
                g = store.read_group("s")
            except DataError:  # a rewrite outlasted the retries: an error, not half a step
                refused += 1
                continue
            reads += 1
            gen = g["attrs"]["gen"]
            for name in ("a", "b"):
                assert g[name].min() == g[name].max() == gen, (name, gen, np.unique(g[name]))
            seen.add(gen)
    finally:
        proc.kill()
        proc.wait(10)
    assert len(seen) >= 3 and reads >= 10, (seen, reads, refused)  # raced many rewrites


def test_store_reached_through_a_symlink_has_the_same_lock(tmp_path):
    store = tmp_path / "run.zarr"
    RunStore(store)
    link = tmp_path / "alias.zarr"
    link.symlink_to(store, target_is_directory=True)
    (tmp_path / "up").symlink_to(tmp_path, target_is_directory=True)  # a link above it
    proc = _start_holder(store)  # another process writes the store by its own name
    try:
        for other in (link, tmp_path / "up" / "run.zarr"):  # a second writer by another name
            with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"):
                StoreLock(other).acquire()
            assert holder(other)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait(10)
    assert lock_path(link) == lock_path(tmp_path / "up" / "run.zarr") == lock_path(store)
