"""Child processes that die with their parent, even when the parent is SIGKILLed.

A server or worker that ptyflow starts in the background must not outlive the command
that started it: a SIGKILLed parent runs no ``finally`` and no ``atexit``, so only the
kernel can clean up. On Linux, ``prctl(PR_SET_PDEATHSIG, sig)`` asks it to send ``sig``
to a process the moment its parent dies; the setting survives ``execve``.

It is set by a tiny launcher (``python -m flows.lifeline PPID SIG -- CMD ...``) that sets
the signal on itself and then ``exec``\\ s the real command (same PID), rather than by a
``preexec_fn``: Python documents ``preexec_fn`` as unsafe when the parent has threads,
and Prefect, Dask and rich all run threads by the time a server is started.

Caveat (Linux semantics): the "parent" is the *thread* that started the child. A child
started from a short-lived thread would be killed when that thread ends, so
:func:`guarded` arms the signal only when called from the main thread. Elsewhere (and on
systems without ``prctl``) the command runs unguarded and the caller's process-group
cleanup (``flows.serve.stop_process``) is what remains.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    Returns
    -------
    True where it is set (Linux), False where ``prctl`` does not exist.

    Raises
    ------
    OSError
        ``prctl`` refused (an invalid signal number).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG, {sig}): {os.strerror(err)}")
    return True


def guarded(args: list[str], sig: int = signal.SIGKILL) -> list[str]:
    """``args`` wrapped so that the command gets ``sig`` when this process dies.

    Parameters
    ----------
    args : the command line (``args[0]`` is looked up on PATH).
    sig : the signal the child gets: SIGKILL for disposable servers (certain, instant),
        SIGTERM for servers that should shut down cleanly.

    Returns
    -------
    The command line to pass to ``subprocess.Popen``; ``args`` unchanged outside the main
    thread (see the module's caveat).
    """
    if threading.current_thread() is not threading.main_thread():
        return list(args)
    return [sys.executable, "-m", "flows.lifeline", str(os.getpid()), str(int(sig)), "--",
            *args]  # fmt: skip


def main(argv: list[str]) -> None:
    """``PPID SIG -- CMD ...``: arm the death signal, then become ``CMD``."""
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: python -m flows.lifeline PPID SIG -- CMD [ARGS...]")
    ppid, sig, cmd = int(argv[0]), int(argv[1]), argv[3:]
    set_parent_death_signal(sig)
    # The parent may have died between fork and prctl: then the signal never comes.
    if os.getppid() != ppid:
        os._exit(128 + sig)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
