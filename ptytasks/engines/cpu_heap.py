"""Keep freed memory in the process heap during CPU training (glibc ``mallopt``).

A training step allocates and frees the same few-MB activation buffers thousands of
times. glibc serves blocks above its mmap threshold with fresh ``mmap`` pages and gives
the heap top back to the system above its trim threshold, so every step pays page
faults and kernel zeroing for memory it just released: measured 18-27 % of an RNF
epoch on the 100 x 64^2 far-field set (``bench/bench_rnf_speed.py``; the
``python_overhead`` share of its epoch split). Raising both thresholds keeps the blocks
in the heap for reuse. The price is that the process keeps its peak heap until it exits
-- what a reconstruction worker holds anyway.

Process-wide and idempotent; a no-op off glibc, and when ``PTYFLOW_KEEP_HEAP=0``.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# 256 MiB: above any per-chunk activation; larger blocks (whole frame stacks) still mmap
MMAP_THRESHOLD = 256 * 2**20
TRIM_THRESHOLD = 1024 * 2**20

_done: bool | None = None


def keep_heap(device=None) -> bool:
    """Raise glibc's mmap and trim thresholds once per process; ``True`` when applied.

    ``device``: the run's torch device; anything but a CPU leaves the heap alone.
    """
    global _done
    if device is not None and torch.device(device).type != "cpu":
        return False
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("PTYFLOW_KEEP_HEAP", "1") == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return _done
    _done = ok
    return _done
