"""Children that die with their parent (issue #22, item 7a), with stand-in servers
(``python -m http.server``) so that every test takes a second or two.

The real temporary Prefect server is tested in test_temporary_server_lifetime.py, the real
``ptyflow server start`` in test_server_start_stop.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from flows.serve import free_port
from tests.deploy.proc_helpers import gone, listening, port_free, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG is Linux-only")  # fmt: skip
BOUND_S = 10.0  # a killed parent's child must be gone and its port free within this


def _parent(code: str, tmp_path) -> subprocess.Popen:
    """A Python parent running ``code``; its stdout lines are read by the test."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


def _http_server(port: int) -> str:
    return f"[sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', '{port}']"


def _kill_parent_and_check(parent, child_pid: int, port: int, sig) -> None:
    assert wait_for(lambda: listening(port), 20), "stand-in server never listened"
    parent.send_signal(sig)
    parent.wait(10)
    assert wait_for(lambda: gone(child_pid), BOUND_S) is not None, \
        f"child {child_pid} outlived its parent ({sig!r})"  # fmt: skip
    assert wait_for(lambda: port_free(port), BOUND_S) is not None, f"port {port} still open"


@pytest.mark.parametrize("start", ["lifeline", "serve._popen"])
def test_child_dies_when_parent_is_sigkilled(tmp_path, start):
    port = free_port()
    popen = {
        "lifeline": f"subprocess.Popen(guarded({_http_server(port)}), start_new_session=True)",
        "serve._popen": f"_popen({_http_server(port)}, dict(os.environ), None)",
    }[start]
    parent = _parent(f"""
        import os, subprocess, sys, time
        from flows.lifeline import guarded
        from flows.serve import _popen
        p = {popen}
        print(p.pid, flush=True)
        time.sleep(120)
        """, tmp_path)  # fmt: skip
    child = None
    try:
        child = int(parent.stdout.readline())
        _kill_parent_and_check(parent, child, port, signal.SIGKILL)
    finally:
        parent.kill()
        parent.wait()
        if child is not None and not gone(child):  # a failed test leaves no server behind
            os.kill(child, signal.SIGKILL)


def test_death_signal_survives_exec_and_a_late_start_exits():
    probe = ("import ctypes; v = ctypes.c_int(); "
             "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value)")  # fmt: skip
    from flows.lifeline import guarded

    out = subprocess.run(guarded([sys.executable, "-c", probe], signal.SIGTERM),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == signal.SIGTERM  # PR_GET_PDEATHSIG in the exec'd command
    # A parent that died before prctl: the launcher sees another parent and exits.
    late = subprocess.run([sys.executable, "-m", "flows.lifeline", "1", "9", "--", "true"],
                          timeout=60)  # fmt: skip
    assert late.returncode == 128 + 9


def test_sigterm_runs_cleanup(tmp_path):
    marker = tmp_path / "cleaned"
    parent = _parent(f"""
        import time
        from flows.serve import sigterm_as_exit
        with sigterm_as_exit():
            try:
                print("ready", flush=True)
                time.sleep(120)
            finally:
                open({str(marker)!r}, "w").close()
        """, tmp_path)  # fmt: skip
    try:
        assert parent.stdout.readline().strip() == "ready"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(10) == 143
        assert marker.exists(), "SIGTERM skipped the finally clause"
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_foreground_child_and_its_group_die_with_the_command(tmp_path, sig):
    """``ptyflow server start/worker`` (cli_server._foreground): SIGTERM is passed on and
    the group's leftovers are killed; under SIGKILL the kernel sends the child SIGTERM."""
    port = free_port()
    pids = tmp_path / "pids"
    # The stand-in leaves a grandchild (sleep) in its group, like a worker's flow run, one
    # that ignores SIGTERM: only the final kill of the group ends it.
    child = (f"(trap '' TERM; exec sleep 300) & echo $$ $! > {pids}; "
             f"exec {sys.executable} -m http.server --bind 127.0.0.1 {port}")
    parent = _parent(f"""
        import os, sys
        import typer
        from flows.cli_server import _foreground
        try:
            _foreground(["sh", "-c", {child!r}], dict(os.environ))
        except typer.Exit as e:
            sys.exit(e.exit_code)
        """, tmp_path)  # fmt: skip
    try:
        assert wait_for(lambda: pids.exists() and pids.read_text().count(" ") == 1, 20)
        server_pid, sleep_pid = map(int, pids.read_text().split())
        _kill_parent_and_check(parent, server_pid, port, sig)
        if sig == signal.SIGTERM:
            assert parent.returncode == 128 + signal.SIGTERM  # the child's code, shell-style
            assert wait_for(lambda: gone(sleep_pid), BOUND_S) is not None, "group leftover"
    finally:
        parent.kill()
        parent.wait()
        if pids.exists():
            for pid in map(int, pids.read_text().split()):
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
