"""Shared pieces of the engine tests: stopping a run after some epochs, for resume tests."""

from __future__ import annotations


class Killed(Exception):
    """Raised by :func:`kill_after` to stop a run (its checkpoint is written first)."""


def kill_after(k: int):
    """A callback that stops the run once ``k`` epochs are done (after their checkpoint)."""

    def cb(epoch, info):
        if epoch == k - 1:
            raise Killed

    return cb
