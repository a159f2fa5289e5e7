"""Metadata <-> JSON/array conversion shared by the CXI writer and the run store.

``PtychoData.meta`` is free-form. Arrays in it are stored as datasets/arrays; everything
else must round-trip through JSON (NumPy scalars become Python numbers, tuples become
lists). Nothing is ever pickled.
"""

from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["split_meta", "to_jsonable", "dumps", "loads"]


def to_jsonable(v):
    """A JSON-compatible copy of ``v`` (non-finite floats become strings)."""
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # 'inf', 'nan': JSON has no literal for them
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, complex):
        return [v.real, v.imag]
    return str(v)


def split_meta(meta: dict | None) -> tuple[dict, dict[str, np.ndarray]]:
    """``(json_part, array_part)``; arrays of any rank go to ``array_part``."""
    js, arrays = {}, {}
    for k, v in (meta or {}).items():
        if isinstance(v, np.ndarray) and v.ndim > 0:
            arrays[str(k)] = v
        else:
            js[str(k)] = to_jsonable(v)
    return js, arrays


def dumps(v) -> str:
    return json.dumps(to_jsonable(v), sort_keys=True)


def loads(s) -> object:
    if isinstance(s, bytes):
        s = s.decode()
    return json.loads(s)
