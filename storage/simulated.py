"""Simulated datasets written straight to files (the file I/O beside
:mod:`ptytasks.simulate`, which itself writes nothing)."""

from __future__ import annotations

import os
from pathlib import Path

from ptytasks.data import PtychoData


def simulate_coded_field(path: str | os.PathLike, **kw) -> PtychoData:
    """Simulate a large coded-ptychography field and write it as CXI at ``path``, in
    bounded memory (:func:`ptytasks.simulate.coded_large.coded_field`, keywords alike).

    Returns
    -------
    PtychoData
        The written dataset, read back with ``frames`` left on disk
        (:class:`~ptytasks.lazy_frames.LazyFrames`).
    """
    from ptytasks.simulate.coded_large import coded_field
    from storage.cxi import read_cxi, write_cxi

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # its scratch directory lives there too
    with coded_field(path.parent, **kw) as data:
        write_cxi(path, data)
    return read_cxi(path, lazy=True)
