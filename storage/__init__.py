"""storage: the Zarr v3 run store, readers of measured formats, atomic writers.

Public API (imported lazily, so ``import storage`` stays cheap)::

    from storage import RunStore, read_any, read_cxi, write_cxi, DataError, fingerprint
    from storage.mosaic import MosaicWriter

See ``docs/storage.md`` and :mod:`storage.layout` for the store layout.
"""

from __future__ import annotations

import importlib

__all__ = ["DataError", "RunStore", "read_any", "read_cxi", "write_cxi", "fingerprint",
           "validate_data", "MosaicWriter"]  # fmt: skip

_WHERE = {
    "DataError": "storage.errors",
    "RunStore": "storage.store",
    "read_any": "storage.readers",
    "read_cxi": "storage.cxi",
    "write_cxi": "storage.cxi",
    "fingerprint": "storage.atomic",
    "validate_data": "storage.validate",
    "MosaicWriter": "storage.mosaic",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
