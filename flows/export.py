"""Reading results back out of a run store: plain arrays (``export_npz``) and a summary
(``summarize``). Used by ``ptyflow export`` and ``ptyflow show``."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from flows.stages import tile_step
from storage import layout as L
from storage.errors import DataError
from storage.lock import StoreLock
from storage.store import RunStore


def _tiles(store: RunStore) -> list[dict]:
    return list(store.root[L.TILING].attrs["tiles"]) if store.is_complete(L.TILING) else []


def _nominal(raw) -> list[str]:
    """The raw step's fields that are placeholders, not the file's (``meta["nominal"]``)."""
    return [str(k) for k in ((raw.attrs.get("meta") or {}).get("nominal") or [])]


def final_positions(store: RunStore) -> tuple[np.ndarray, np.ndarray]:
    """Refined scan positions of every kept frame in global (mosaic) pixels.

    Each tile reconstructs its frames in its own canvas; a frame's final position is the
    tile's refined position plus the tile's offset (canvas origin, less the detector crop
    for coded tiles), taken from the tile whose core owns the frame's probe centre (frames
    in overlap margins appear in several tiles). Stitching corrects tiles by a complex
    scale and a phase ramp only, so the mapping is a pure translation.

    Returns
    -------
    positions : (kept, 2) float64, ``(y, x)`` top-left window corners, mosaic pixels
    frames : (kept,) int64, the frames' indices in the raw data
    """
    kept = store.read_array(f"{L.SUBSAMPLE}/kept")
    nominal = store.read_array(f"{L.RAW}/positions")[kept].astype(np.float64)
    out = nominal.copy()
    probe_half = np.array(store.root[L.RAW]["frames"].shape[1:], np.float64) / 2
    for t in _tiles(store):
        name = tile_step(t["tile_id"])
        if not store.is_complete(name) or not store.exists(f"{name}/positions"):
            continue
        local = store.read_array(f"{name}/positions").astype(np.float64)
        idx = np.asarray(t["frame_indices"], np.int64)
        shift = np.array(t["object_origin"], np.float64)
        crop = t.get("frame_crop")
        if crop is not None:
            shift -= np.array([crop[0], crop[2]], np.float64)
        glob = local + shift
        y0, y1, x0, x1 = t["core"]
        c = nominal[idx] + probe_half  # ownership by the nominal centre, as in planning
        own = (c[:, 0] >= y0) & (c[:, 0] < y1) & (c[:, 1] >= x0) & (c[:, 1] < x1)
        out[idx[own]] = glob[own]
    return out, kept


def best_probe(store: RunStore) -> np.ndarray | None:
    """The probe of the tile with the most frames (tiles share one beam); the priors'
    where tiles hold detector crops (coded tiles: each tile's probe is its crop of the
    illumination, not the beam)."""
    best, n = None, -1
    frame = tuple(store.root[L.RAW]["frames"].shape[1:])
    for t in _tiles(store):
        crop = t.get("frame_crop")
        if crop is not None and (crop[1] - crop[0], crop[3] - crop[2]) != frame:
            continue
        name = tile_step(t["tile_id"])
        if store.is_complete(name) and store.exists(f"{name}/probe"):
            if len(t["frame_indices"]) > n:
                best, n = store.read_array(f"{name}/probe"), len(t["frame_indices"])
    if best is None and store.exists(f"{L.PRIORS}/probe"):
        best = store.read_array(f"{L.PRIORS}/probe")
    return best


_EXPORT_BLOCK_BYTES = 64 * 2**20  # rows copied per block: peak memory of an export


def _write_member(zf: zipfile.ZipFile, key: str, arr) -> None:
    """``arr`` (ndarray, or a zarr array copied in blocks of rows) as ``key.npy``."""
    fmt = np.lib.format
    if isinstance(arr, np.ndarray) or np.ndim(arr) == 0:
        arr = np.asarray(arr)
        with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
            fmt.write_array(fh, arr, allow_pickle=False)
        return
    header = {"descr": fmt.dtype_to_descr(np.dtype(arr.dtype)), "fortran_order": False,
              "shape": tuple(int(v) for v in arr.shape)}  # fmt: skip
    row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * np.dtype(arr.dtype).itemsize)
    per = max(1, _EXPORT_BLOCK_BYTES // row)
    with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
        fmt.write_array_header_2_0(fh, header)
        for s in range(0, arr.shape[0], per):  # C order: row blocks are contiguous bytes
            fh.write(np.ascontiguousarray(arr[s : s + per]).tobytes())


def write_npz_streamed(out: Path, arrays: dict) -> None:
    """An uncompressed ``.npz`` (as ``np.savez``) written atomically, large arrays a block
    of rows at a time, so memory stays ~``_EXPORT_BLOCK_BYTES`` whatever their size."""
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, arr in arrays.items():
                _write_member(zf, key, arr)
        os.replace(tmp, out)  # a crash leaves the old file (or none), never half a file
    finally:
        if tmp.exists():
            tmp.unlink()


def export_npz(store_path: str | Path, out: str | Path) -> dict[str, tuple]:
    """Write ``object``, ``probe``, ``positions`` (and context) of a finished run to NPZ.

    Keys: ``object`` (complex64 mosaic, level 0; a multislice run: the product of its
    slices), ``object_slices`` (multislice only: ``(slice, y, x)``, axis names in
    ``object_slices_dims``), ``weight``, ``probe`` (``(mode, y, x)``
    for a mixed state; its axis names in ``probe_dims``), ``positions``
    (final, global pixels; empty for Fourier ptychography), ``frames`` (raw indices of the
    positions), ``wavevectors`` (Fourier), ``pixel_size`` [m], ``wavelength`` [m],
    ``nominal`` (the names of those two the file did not give: placeholders).
    Returns ``{key: shape}``. The mosaic is copied from the store a block of rows at a time
    and the file is written atomically (:func:`write_npz_streamed`).

    Raises
    ------
    DataError
        The store has no stitched mosaic yet.
    storage.lock.StoreLockedError
        A run is writing the store.
    """
    # The store's lock for the whole copy: a run re-entering the store would rewrite the
    # mosaic, probe and positions while they stream out, and the file would mix two runs.
    # A run holding the store refuses the export (StoreLockedError, naming it), and a
    # run started meanwhile is refused, naming this export.
    store = RunStore(store_path, "r")  # first: no lock file beside a path that is no store
    with StoreLock(store_path, command=f"ptyflow export {store_path} {out}"):
        return _export_npz(store, out)


def _export_npz(store: RunStore, out: str | Path) -> dict[str, tuple]:
    if not store.is_complete(L.MOSAIC):
        raise DataError(store.path, L.MOSAIC, "no complete mosaic: run the pipeline first")
    raw = store.root[L.RAW]
    level0 = store.root[f"{L.MOSAIC}/level_0"]
    arrays: dict = {
        "object": level0["object"],  # complex64 zarr arrays, streamed into the file
        "weight": level0["weight"],
        "pixel_size": np.float64(raw.attrs["pixel_size"]),
        "wavelength": np.float64(raw.attrs["wavelength"]),
        # geometry the file did not give (placeholders ingest put in): never to be read
        # as measured
        "nominal": np.array(_nominal(raw), dtype=str),
    }
    n_slices = int(store.root[L.MOSAIC].attrs.get("n_slices", 1))
    if n_slices > 1:  # small (thick specimens are electron fields of view): read whole
        arrays["object_slices"] = np.stack([
            store.read_array(f"{L.MOSAIC}/{L.SLICE_GROUP}{s}/level_0/object")
            for s in range(n_slices)])  # fmt: skip
        arrays["object_slices_dims"] = np.array(L.dims_for("object", 3)[:1] + ("y", "x"))
    probe = best_probe(store)
    arrays["probe"] = np.zeros((0, 0), np.complex64) if probe is None else probe
    # Named axes (a mixed-state probe has a leading "mode" axis, strongest mode first).
    arrays["probe_dims"] = np.array(L.dims_for("probe", np.ndim(arrays["probe"])))
    if "positions" in raw:
        arrays["positions"], arrays["frames"] = final_positions(store)
    else:
        arrays["positions"] = np.zeros((0, 2))
        kept = store.read_array(f"{L.SUBSAMPLE}/kept")
        arrays["frames"] = kept
        if "wavevectors" in raw:
            arrays["wavevectors"] = raw["wavevectors"][...][kept]
    out = Path(out)
    if out.suffix != ".npz":  # as np.savez did
        out = out.with_name(out.name + ".npz")
    write_npz_streamed(out, arrays)
    return {k: np.shape(v) for k, v in arrays.items()}


def summarize(store_path: str | Path) -> dict:
    """What a run store holds: data, steps, tiles (engine, time, loss), mosaic, metrics."""
    store = RunStore(store_path, "r")
    out: dict = {"store": str(store.path), "layout": store.root.attrs.get("ptyflow_layout")}
    if store.is_complete(L.RAW):
        raw = store.root[L.RAW]
        a = raw.attrs
        out["data"] = {"modality": a["modality"], "frames": int(raw["frames"].shape[0]),
                       "frame_shape": list(raw["frames"].shape[1:]),
                       "wavelength_m": a["wavelength"], "pixel_size_m": a["pixel_size"],
                       "nominal": _nominal(raw),
                       "source": (a.get("meta") or {}).get("source")}  # fmt: skip
    if store.is_complete(L.SUBSAMPLE):
        out["kept_frames"] = int(store.root[L.SUBSAMPLE]["kept"].shape[0])
    tiles = _tiles(store)
    rows = []
    for t in tiles:
        name = tile_step(t["tile_id"])
        row = {"tile": t["tile_id"], "frames": len(t["frame_indices"]), "done": False}
        if store.is_complete(name):
            g = store.root[name]
            loss = g["loss"][...] if "loss" in g else np.zeros(0)
            row.update(done=True, engine=g.attrs.get("engine"),
                       seconds=round(float(g.attrs.get("seconds", 0.0)), 2),
                       final_loss=float(loss[-1]) if loss.size else None)  # fmt: skip
        rows.append(row)
    out["tiles"] = rows
    if store.is_complete(L.MOSAIC):
        out["mosaic"] = list(store.root[f"{L.MOSAIC}/level_0/object"].shape)
    if store.is_complete(L.METRICS):
        m = store.root[L.METRICS].attrs
        out["metrics"] = dict(m.get("values", {}))
        out["previews"] = list(m.get("previews", []))
    out["steps"] = sorted(store.completed_steps())
    return out
