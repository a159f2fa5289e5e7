"""The pipeline's stages as plain functions: run-store path and parameters in, a small
JSON-able reference out. Prefect tasks (``flows.tasks``) wrap them one to one; tests call
them directly. Every stage is a resumable step of the run store (``storage.atomic``).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flows.checks import check_calibration_settings
from flows.cluster import on_gpu_worker, worker_threads
from flows.params import (
    CalibrationParams,
    ConfigError,
    EngineParams,
    EvaluationParams,
    IngestParams,
    SubsampleParams,
    TilingParams,
)
from flows.step_keys import calibration_key
from flows.tile_steps import (
    checkpoint_path,
    drop_stale_checkpoints,
    epoch_progress_path,
    half_seed,
    tile_fingerprint,
    tile_step,
)
from ptytasks.modalities import get as get_modality
from ptytasks.modalities import modality_of
from storage import layout as L
from storage.atomic import fingerprint
from storage.errors import DataError
from storage.store import RunStore

log = logging.getLogger("ptyflow")
Progress = Callable[[int, dict], object]


def _store(path: str, mode: str = "a") -> RunStore:
    return RunStore(path, mode=mode)


# ----------------------------------------------------------------------------- ingest
def ingest(input_path: str, store_path: str, params: IngestParams) -> dict:
    """Stream the raw dataset into ``raw/`` (skipped when the source is unchanged)."""
    new = not os.path.exists(store_path)
    store = _store(store_path)
    try:
        key = store.ingest(input_path, detector_artefacts=params.detector_artefacts,
                           **params.reader_options())
    except Exception:
        if new and not store.completed_steps():  # made here, holds nothing: not left behind
            shutil.rmtree(store_path, ignore_errors=True)
        raise
    g = store.root[L.RAW]
    return {"step": L.RAW, "key": key, "n_frames": int(g["frames"].shape[0]),
            "modality": g.attrs["modality"]}  # fmt: skip


# ----------------------------------------------------------------------------- subsample
def subsample(store_path: str, params: SubsampleParams) -> dict:
    """Choose the kept frames; store their indices as step ``subsample``."""
    from ptytasks.subsample import subsample as choose

    store = _store(store_path)
    raw = store.root[L.RAW]
    n = int(raw["frames"].shape[0])
    positions = next((raw[k][...] for k in ("positions", "wavevectors") if k in raw),
                     np.zeros((n, 2)))  # the frames' places: scan positions or LED k
    diameter = float(min(raw["frames"].shape[1:])) / 2  # probe footprint ~ half the window
    kept = choose(positions, method=params.method, fraction=params.fraction,
                  stride=params.stride, overlap=params.overlap, probe_diameter=diameter,
                  seed=params.seed)  # fmt: skip
    key = store.write_subsample(kept, fingerprint(params.model_dump()), method=params.method)
    return {"step": L.SUBSAMPLE, "key": key, "n_kept": int(len(kept)), "n_frames": n}


# ----------------------------------------------------------------------------- calibrate
def calibrate(store_path: str, params: CalibrationParams) -> dict:
    """Priors as step ``priors``: probe; Fourier pupil (+ its Zernike coefficients); coded
    surface (calibrated from a reference dataset, or the one the dataset carries)."""
    from ptytasks import calibration as cal
    from ptytasks.probe_estimate import mean_pattern

    store = _store(store_path)
    fp = fingerprint(calibration_key(params))
    if store.is_complete(L.PRIORS, fp):
        return {"step": L.PRIORS, "skipped": True}
    data = store.read_raw(lazy=True, subsample=True)
    mod = modality_of(data)
    check_calibration_settings(params, mod.name)  # the flow's own check (the UI runs no other)
    blind = mod.localized_probe and params.probe != "physical"
    if mod.scanning and not (params.probe == "data" and data.probe is not None):
        # The physical scaling and coded plane wave depend on the frames only through their
        # mean: stream it, one block in memory. The blind far- and near-field probes stream
        # the mean themselves and read a bounded trial set beside it.
        if not blind:
            data.frames = mean_pattern(data.frames, clip=False).astype(np.float32)[None]
    try:  # 'physical' needs the beam's parameters in the file
        arrays: dict = {"probe": cal.probe_prior(data, params.probe)}
    except ValueError as exc:
        raise ConfigError(f"calibration.probe: {exc}") from None
    if mod.has_pupil:
        measured = None
        if params.pupil_file:
            from storage.readers.fpm_mat import read_pupil

            measured = read_pupil(params.pupil_file)
        arrays["pupil"], arrays["zernike"] = cal.pupil_prior(
            data, measured, measured_wavelength=params.pupil_wavelength
        )
    if mod.has_surface:
        if params.surface_reference:
            from storage.readers import read_any

            ref = read_any(params.surface_reference)
            if not modality_of(ref).has_surface or ref.frame_shape != data.frame_shape:
                raise DataError(params.surface_reference, "frames", f"must be coded data of "
                                f"this detector {data.frame_shape}; got {ref.modality} "
                                f"{ref.frame_shape}")  # fmt: skip
            specimen = (ref.ground_truth or {}).get("object")
            arrays["surface"] = cal.surface_from_reference(ref, specimen)
        elif isinstance(data.meta.get("surface"), np.ndarray):
            arrays["surface"] = data.meta["surface"].astype(np.complex64)
    key = store.write_group(L.PRIORS, arrays, fp, depends_on=[L.SUBSAMPLE],
                            dims={"zernike": ("noll",)},
                            attrs={"probe_source": params.probe})  # fmt: skip
    return {"step": L.PRIORS, "key": key, "priors": sorted(k for k, v in arrays.items()
                                                           if v is not None)}  # fmt: skip


# ----------------------------------------------------------------------------- tiling
def plan(store_path: str, params: TilingParams) -> list[dict]:
    """Plan tiles for the subsampled data; stored as step ``tiling`` (its attrs)."""
    from ptytasks.tiling import Tile

    store = _store(store_path)
    # An unset guard leaves the fingerprint of stores planned before it existed unchanged.
    fp = fingerprint(params.model_dump(exclude={"guard"} if params.guard is None else None))
    if store.is_complete(L.TILING, fp):
        return list(store.root[L.TILING].attrs["tiles"])
    data = store.read_raw(lazy=True, subsample=True)
    try:
        planned = modality_of(data).plan_tiles(data, tuple(params.grid), margin=params.margin,
                                               guard=params.guard)  # fmt: skip
    except ValueError as exc:  # a grid these frames cannot take: the setting to change
        raise ConfigError(f"tiling (grid {list(params.grid)}, margin {params.margin}): "
                          f"{exc}") from None
    tiles = [t.to_dict() for t in planned]
    with store.step(L.TILING, fp, depends_on=[L.SUBSAMPLE]) as st:
        if not st.done:
            st.set_attrs(tiles=tiles)
    assert all(Tile.from_dict(t) for t in tiles)
    return tiles


# ----------------------------------------------------------------------------- reconstruct
def planned_tiles(store_path: str, ids: list[str] | None = None) -> list[dict]:
    """The tiles step ``tiling`` planned (all, or those named by ``ids``, in that order):
    flows pass tile ids between tasks, never the tiles' frame lists."""

    store = _store(store_path)
    if not store.is_complete(L.TILING):
        raise DataError(store_path, L.TILING, "no tile plan in the store (run plan first)")
    tiles = list(store.root[L.TILING].attrs["tiles"])
    if ids is None:
        return tiles
    by_id = {t["tile_id"]: t for t in tiles}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(store_path, L.TILING, f"tiles {missing} are not in the plan")
    return [by_id[i] for i in ids]


def reconstruct_tile(
    store_path: str,
    tile: dict | str,
    engine: EngineParams,
    calibration: CalibrationParams,
    *,
    half: str = "",
    torch_threads: int | None = None,
    progress: Progress | None = None,
) -> dict:
    """Reconstruct one tile (its dict, or its id in the store's plan) and write it as step
    ``reconstruct[_half]/<tile_id>``.

    Skipped when the step is complete with the same tile, engine and priors. The engine's
    checkpoint lives beside the store under the step's key (:func:`checkpoint_path`), so
    a worker killed mid-tile resumes it with the same inputs and parameters, and only then;
    checkpoints of the tile under other keys are deleted.

    Raises
    ------
    DataError
        An upstream step (priors, tiling) is not complete.
    ptytasks.engines.checkpoint.CheckpointError
        The checkpoint file is not one ptyflow wrote (e.g. a planted pickle: refused,
        never executed).
    """
    import torch

    from ptytasks import calibration as cal
    from ptytasks.engines.checkpoint import StaleCheckpoint
    from ptytasks.engines.registry import run_engine
    from ptytasks.tiling import Tile, tile_dataset, tile_half
    from storage.atomic import step_key

    if isinstance(tile, str):  # a flow's reference: the tile as planned in the store
        tile = planned_tiles(store_path, [tile])[0]

    threads = torch_threads or worker_threads()  # None: torch's default in this process
    if threads:
        torch.set_num_threads(threads)
    store = _store(store_path)
    name = tile_step(tile["tile_id"], half)
    settings = on_gpu_worker(engine.engine, engine.settings())
    if half:  # independent halves: seeds of their own (flows.tile_steps.half_seed)
        settings["seed"] = half_seed(engine, half)
    if not store.is_complete(L.RAW):  # the modality's attribute only: a skip reads no data
        raise DataError(store_path, L.RAW, "raw data is missing or incomplete (run ingest)")
    mod = get_modality(store.root[L.RAW].attrs["modality"])
    fp = tile_fingerprint(tile, engine, calibration, half, mod)
    if store.is_complete(name, fp):
        return {"step": name, "skipped": True}
    upstream = {}
    for dep in (L.PRIORS, L.TILING):  # write_group's depends_on: the key it will store
        m = store.marker(dep)
        if m is None or not store.is_complete(dep):
            raise DataError(store_path, dep, f"step {name!r} depends on {dep!r}, which is "
                            "not complete (run it first)")
        upstream[dep] = m["key"]
    ckpt = checkpoint_path(store_path, name, step_key(fp, upstream))
    drop_stale_checkpoints(store_path, name, keep=ckpt)
    t0 = time.perf_counter()
    data = store.read_raw(lazy=True, subsample=True)  # lazy: a tile reads only its frames
    t = Tile.from_dict(tile)
    # halves of the whole scan, so a frame shared by two tiles is in one half in both
    sub = tile_half(data, t, half, mod.half_split(data)) if half else tile_dataset(data, t)
    if sub.n_frames == 0:  # a sparse tile whose few frames all fell in the other half
        raise ConfigError(f"tile {t.tile_id}: half {half!r} holds none of its "
                          f"{len(t.frame_indices)} frames: use a coarser tiling.grid (or a "
                          "larger tiling.margin), or evaluation.half_data false")  # fmt: skip
    if engine.slice_thickness is not None:  # the given spacing overrides the file's
        sub.params = {**sub.params, "slice_distance": float(engine.slice_thickness)}
    if engine.n_slices > 1 and "slice_distance" not in sub.params:
        raise ConfigError(f"engine.n_slices = {engine.n_slices} needs the slices' spacing: set "
                          "engine.slice_thickness (metres); the data have no "
                          "params.slice_distance")  # fmt: skip
    priors = store.read_group(L.PRIORS)
    probe, surface = priors.get("probe"), priors.get("surface")
    if half and cal.probe_prior_from_frames(sub, calibration.probe):
        # Independent halves: a blind probe from all frames would give both halves one start
        # that has seen the other half (and its errors, which the FRC reads as resolution).
        probe = cal.probe_prior(sub, calibration.probe)
    if t.frame_crop is not None:
        y0, y1, x0, x1 = t.frame_crop
        if probe is not None and probe.shape == data.frame_shape:
            probe = probe[y0:y1, x0:x1]
        if surface is not None:
            surface = surface[y0:y1, x0:x1]
    pupil = None
    if mod.has_pupil:
        pupil, _ = cal.pupil_prior(sub, coefficients=priors.get("zernike"))
    obj0 = cal.object_prior(sub, probe, calibration.object, calibration.prior_iterations,
                        learned_weights=calibration.learned_weights)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    epochs_file = epoch_progress_path(store_path, name)

    def on_epoch(epoch: int, info: dict):
        # Beside the store, for progress bars in other processes (flows.runner).
        tmp = epochs_file.with_name(epochs_file.name + ".tmp")
        tmp.write_text(f"{epoch + 1} {engine.epochs}")
        os.replace(tmp, epochs_file)
        return progress(epoch, info) if progress is not None else None

    run = functools.partial(
        run_engine, engine.engine, sub, settings, object_prior=obj0,
        probe_prior=probe, surface_prior=surface, pupil_prior=pupil, callback=on_epoch,
        checkpoint=str(ckpt),  # engines that cannot resume ignore it
    )  # fmt: skip
    try:
        result = run()
    except StaleCheckpoint as exc:
        # Same key, other engine options: engine defaults changed with the code. Raised
        # before any training, so starting afresh loses nothing that could be kept.
        log.warning("%s; reconstructing %s afresh", exc, name)
        ckpt.unlink(missing_ok=True)
        result = run()
    weight = cal.tile_weight(sub, result)
    arrays = {"object": result.object, "weight": weight, "probe": result.probe,
              "loss": np.asarray(result.loss_history, np.float64),
              "positions": result.positions_px, "pupil": result.pupil,
              "wavevectors": result.wavevectors}  # fmt: skip
    attrs = {"origin": list(t.object_origin), "tile": tile, "engine": engine.engine,
             "params": {k: v for k, v in result.params.items() if np.ndim(v) == 0},
             "seconds": time.perf_counter() - t0}  # fmt: skip
    if "mode_power_fractions" in result.extras:
        attrs["mode_power_fractions"] = [float(v) for v in result.extras["mode_power_fractions"]]
    key = store.write_group(name, arrays, fp, depends_on=[L.PRIORS, L.TILING], attrs=attrs)
    for f in (ckpt, epochs_file):
        if f.exists():
            os.remove(f)
    return {"step": name, "key": key, "seconds": attrs["seconds"], "skipped": False,
            "final_loss": result.final_loss}  # fmt: skip


# ----------------------------------------------------------------------------- stitch
def stitch(store_path: str, tiles: list[dict] | list[str] | None = None, *, half: str = "",
           client=None) -> dict:
    """Align tiles (least squares over the overlap graph), then blend them shard by shard
    into ``mosaic[_half]`` (:meth:`storage.mosaic.MosaicWriter.stitch`: one writer per
    shard, serially or on ``client``) and build its pyramid. ``tiles``: dicts, ids in the
    store's plan, or ``None`` for every planned tile."""
    from ptytasks.stitching import mosaic_shape, solve_corrections
    from ptytasks.tiling import Tile
    from storage.mosaic import MosaicWriter, TileLoader

    if tiles is None or any(isinstance(t, str) for t in tiles):
        tiles = planned_tiles(store_path, tiles)
    store = _store(store_path)
    name = f"{L.MOSAIC}{'_' + half if half else ''}"
    steps = [tile_step(t["tile_id"], half) for t in tiles]
    fp = fingerprint(steps, [store.marker(s)["key"] for s in steps], MosaicWriter.FORMAT)
    if store.is_complete(name, fp):
        return {"step": name, "skipped": True}
    tl = [Tile.from_dict(t) for t in tiles]
    raw = store.root[L.RAW].attrs
    # A coded tile has no phase-ramp ambiguity (a tilted specimen wave moves across the
    # fixed coded surface), so no ramp is fitted: its guard bands would only bias one.
    ramps = not get_modality(raw["modality"]).has_surface
    by_tile = {t.tile_id: s for t, s in zip(tl, steps, strict=True)}
    load = TileLoader(store_path, by_tile)
    n_slices = load.n_slices()
    shape = mosaic_shape(tl)

    def mosaic(group: str, loader: TileLoader) -> dict:
        corrections = solve_corrections(tl, loader, ramps=ramps)
        w = MosaicWriter.create(store, shape, pixel_size=raw["pixel_size"], name=group)
        w.stitch(tl, loader, corrections, fill=1.0, client=client)  # unseen: free space
        w.build_pyramid(client=client)
        return {k: v.to_dict() for k, v in corrections.items()}

    with store.step(name, fp, depends_on=steps) as st:
        if not st.done:
            # the projection (product of a thick specimen's slices) is the mosaic; each
            # slice is stitched beside it, aligned on its own (its own phase offset)
            corrections = mosaic(name, load)
            for s in range(n_slices if n_slices > 1 else 0):
                mosaic(f"{name}/{L.SLICE_GROUP}{s}", TileLoader(store_path, by_tile, s))
            st.set_attrs(corrections=corrections, n_slices=n_slices)
    return {"step": name, "shape": list(shape), "n_tiles": len(tiles), "n_slices": n_slices}


# ----------------------------------------------------------------------------- evaluate
_BAND_PIXELS = 2**20  # level-0 pixels per band when the truth is reduced (~50 MiB transient)


def _evaluation_level(store: RunStore, names: list[str]) -> int:
    """The pyramid level metrics use: the finest within ``MAX_EVAL_PIXELS`` that every
    mosaic in ``names`` has (level 0 for all but very large mosaics)."""
    from ptytasks.evaluation import evaluation_level

    shapes, k = [], 0
    while all(store.exists(f"{n}/level_{k}/object") for n in names):
        shapes.append(tuple(store.root[f"{names[0]}/level_{k}/object"].shape))
        k += 1
    return evaluation_level(shapes)


def _truth_at_level(store: RunStore, k: int, slice_index: int | None = None) -> np.ndarray | None:
    """The ground-truth object on pyramid level ``k``'s grid (None without truth), reduced
    band by band with the level-0 mosaic weight, so level 0 is never read whole. A thick
    specimen's truth: the product of its slices, or slice ``slice_index``."""
    from ptytasks.evaluation import downsample_weighted

    path = f"{L.TRUTH}/object"
    if not store.exists(path):
        return None
    t = store.root[path]
    # a thick specimen's truth (slice, y, x) is scored as its projection, like the mosaic
    band = (lambda a: a.prod(0)) if t.ndim == 3 else (lambda a: a)
    if k == 0:
        return band(t[...]) if slice_index is None else t[slice_index]
    w0 = store.root[f"{L.MOSAIC}/level_0/weight"]
    f = 2**k
    h, wd = min(t.shape[-2], w0.shape[0]), min(t.shape[-1], w0.shape[1])
    rows = f * max(1, _BAND_PIXELS // max(1, wd * f))  # whole f x f blocks per band
    out = np.zeros((-(-h // f), -(-wd // f)), np.complex64)
    for y in range(0, h, rows):
        y1 = min(h, y + rows)
        tb = band(t[..., y:y1, :wd]) if slice_index is None else t[slice_index, y:y1, :wd]
        out[y // f : -(-y1 // f)] = downsample_weighted(tb, w0[y:y1, :wd], f)
    return out


def evaluate(store_path: str, params: EvaluationParams, *, preview_dir: str | None = None) -> dict:
    """Metrics of the stitched object (vs ground truth, and/or half-data FRC) as step
    ``metrics``; preview PNGs of amplitude and phase written beside the store.

    A mosaic larger than ``ptytasks.evaluation.MAX_EVAL_PIXELS`` is evaluated on the finest
    pyramid level within it (``values["evaluation_level"]``; resolutions in metres use that
    level's pixel), so memory does not grow with the mosaic.
    """
    from ptytasks import evaluation as E

    store = _store(store_path)
    deps = [s for s in (L.MOSAIC, f"{L.MOSAIC}_a", f"{L.MOSAIC}_b") if store.is_complete(s)]
    # halves left in the store by an earlier run with half_data on are not this run's
    halved = params.half_data and f"{L.MOSAIC}_a" in deps and f"{L.MOSAIC}_b" in deps
    deps = [d for d in deps if halved or d == L.MOSAIC]
    k = _evaluation_level(store, [L.MOSAIC, *([f"{L.MOSAIC}_a", f"{L.MOSAIC}_b"] * halved)])
    band = None
    if halved:  # the band both halves measured, per pixel of level k
        b = E.half_data_band_limit(store.read_raw(lazy=True, subsample=True))
        band = b * 2**k if b is not None and b * 2**k < 0.5 else None
    # the metrics' version is part of the key: a store evaluated under an older definition
    # (e.g. the odd-side FRC bound before 83c98f2) is evaluated again
    fp = fingerprint(params.model_dump(), [store.marker(d)["key"] for d in deps],
                     *([{"evaluation_level": k}] if k else []),
                     *([{"band_limit": round(band, 9)}] if band is not None else []),
                     {"metrics_version": E.METRICS_VERSION})  # fmt: skip
    if store.is_complete(L.METRICS, fp):
        return dict(store.root[L.METRICS].attrs["values"])
    lv = f"level_{k}"
    mosaic = store.read_array(f"{L.MOSAIC}/{lv}/object")
    weight = store.read_array(f"{L.MOSAIC}/{lv}/weight")
    truth = _truth_at_level(store, k)
    halves = None
    if halved:
        halves = tuple(store.read_array(f"{L.MOSAIC}_{h}/{lv}/object") for h in "ab")
    px = float(store.root[L.RAW].attrs["pixel_size"]) * 2**k
    values = E.evaluate_mosaic(mosaic, weight, truth=truth, halves=halves, pixel_size=px,
                             threshold=params.threshold, band_limit=band)  # fmt: skip
    values["evaluation_level"] = float(k)
    n_slices = int(store.root[L.MOSAIC].attrs.get("n_slices", 1))
    if truth is not None and n_slices > 1 and store.root[f"{L.TRUTH}/object"].ndim == 3:
        # each stitched slice against its true slice (the projection is scored above)
        for s in range(n_slices):
            g = f"{L.MOSAIC}/{L.SLICE_GROUP}{s}/{lv}"
            v = E.evaluate_mosaic(store.read_array(f"{g}/object"), store.read_array(f"{g}/weight"),
                                truth=_truth_at_level(store, k, s), pixel_size=px,
                                threshold=params.threshold)  # fmt: skip
            values[f"slice{s}_truth_complex_error"] = v["truth_complex_error"]
    out_dir = Path(preview_dir or Path(store_path).parent)
    previews = E.write_previews(mosaic, weight, out_dir, stem=Path(store_path).stem)
    with store.step(L.METRICS, fp, depends_on=deps) as st:
        if not st.done:
            st.set_attrs(values=values, previews=[str(p) for p in previews])
    return values
