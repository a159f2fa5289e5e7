"""storage: the Zarr v3 run store, readers of measured formats, atomic writers."""
