"""Resumable engine state on disk: one ``torch.save`` file, written atomically.

A checkpoint holds everything a run needs to continue exactly where it stopped: module
and optimiser state dicts, the forward model's parameters, the epoch counter, histories,
and the frame-order RNG state. Writing goes to a temporary file in the same folder that
then replaces the old one (``os.replace`` is atomic on POSIX and Windows), so a run killed
while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "ptyflow-rnf-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (a dict of tensors, state dicts and plain values) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict | None:
    """The saved state, or None when ``path`` does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint")
    return state
