"""Names, dimensions and units of the run store, in one place.

A run store is one Zarr v3 hierarchy (a directory ``*.zarr``); every array carries
``dimension_names`` so that ``xarray.open_datatree(path, engine="zarr")`` opens it with named
dims, and a ``units`` attribute. Complex arrays are ``complex64``. Layout::

    /                       attrs: ptyflow_layout (version), created, conventions
    raw/                    step "raw": the measured data, in run-store conventions
        frames              (scan, det_y, det_x) float32 counts, centred; chunk = 1 frame,
                            shard = k whole frames (a writer owns whole shards)
        scan                (scan,) int64 coordinate: index of the frame in the source file
        axis                (axis,) "y", "x";  kaxis (kaxis,) "ky", "kx"
        positions           (scan, axis) float64 px, top-left corner of the probe window
        wavevectors         (scan, kaxis) float64 cycles/m (Fourier ptychography)
        probe               (probe_y, probe_x) complex64, initial/known probe
        mask                (det_y, det_x) bool, True = usable pixel
        meta/<name>         array-valued provenance entries
        truth/              simulated ground truth: object (obj_y, obj_x), probe, positions,
                            surface, pupil, wavevectors
        attrs               modality, wavelength [m], energy_ev [eV], pixel_size [m],
                            object_shape [px], distance [m], detector_pixel [m], dose,
                            params {name: number}, meta {json}, units {name: unit}
    subsample/              step "subsample": kept (kept,) int64 indices into raw/scan
    priors/                 step "priors": probe, object, surface, pupil (complex64)
    tiling/                 step "tiling": attrs tiles (the planned tiles, one dict each)
    reconstruct/<tile>/     step "reconstruct/<tile>": object (y, x) complex64,
                            probe (mode, probe_y, probe_x) complex64, loss (iteration,)
                            float64, params/<name> learned parameters, attrs: origin [px]
                            of the tile in the mosaic, frame indices, engine settings
    mosaic/level_<k>/       step "mosaic": object (y, x) complex64 and weight (y, x)
                            float32 at 2**k downsampling, coords y, x in metres;
                            amplitude_phase (c, y, x) float32, c = "amplitude", "phase"
                            (coordinate c): the OME-Zarr image (see storage.ome)
    mosaic/slice_<s>/       a multislice run (object (slice, y, x) per tile): slice s stitched
                            alone, same arrays; mosaic/level_<k> then holds the product of
                            the slices (the projection), which the metrics score
    mosaic                  attrs: pixel_size [m], origin [m], n_slices, and "ome": OME-Zarr 0.5
                            multiscales (axes c, y, x in metres; one scale + translation
                            per level) and omero channels, so napari, neuroglancer and
                            ome-zarr open run.zarr/mosaic (and mosaic_a, mosaic_b) as an image
    metrics/                step "metrics" (or any name): scalars as attrs, arrays

Every step group carries, once all its arrays are written, the attribute
``ptyflow_step`` (see :mod:`storage.atomic`); a group without it is incomplete.
"""

from __future__ import annotations

LAYOUT_VERSION = 1

RAW = "raw"
TRUTH = "raw/truth"
SUBSAMPLE = "subsample"
PRIORS = "priors"
TILING = "tiling"
RECONSTRUCT = "reconstruct"
MOSAIC = "mosaic"
METRICS = "metrics"
#: A thick specimen's slice ``s`` is stitched at ``mosaic/slice_<s>`` (its own pyramid).
SLICE_GROUP = "slice_"

#: Dimension names of the arrays with a fixed meaning (key: array name in its group).
DIMS: dict[str, tuple[str, ...]] = {
    "frames": ("scan", "det_y", "det_x"),
    "scan": ("scan",),
    "axis": ("axis",),
    "kaxis": ("kaxis",),
    "positions": ("scan", "axis"),
    "positions_px": ("scan", "axis"),
    "wavevectors": ("scan", "kaxis"),
    "probe": ("probe_y", "probe_x"),
    "mask": ("det_y", "det_x"),
    "object": ("obj_y", "obj_x"),
    "weight": ("obj_y", "obj_x"),
    "surface": ("surface_y", "surface_x"),
    "pupil": ("pupil_y", "pupil_x"),
    "kept": ("kept",),
    "loss": ("iteration",),
}

#: Units of the arrays with a fixed meaning ("1" = dimensionless complex transmission).
UNITS: dict[str, str] = {
    "frames": "counts",
    "positions": "px",
    "positions_px": "px",
    "wavevectors": "1/m",
    "probe": "sqrt(counts)",
    "object": "1",
    "surface": "1",
    "pupil": "1",
    "kept": "1",
    "scan": "1",
    "loss": "1",
}

#: Units of the physical metadata kept as attributes of ``raw``.
META_UNITS: dict[str, str] = {
    "wavelength": "m",
    "energy_ev": "eV",
    "pixel_size": "m",
    "object_shape": "px",
    "distance": "m",
    "detector_pixel": "m",
    "z1": "m",
    "z2": "m",
    "surface_distance": "m",
    "magnification": "1",
    "na": "1",
    "upsample": "1",
    "dose": "counts",
}

STEP_ATTR = "ptyflow_step"
FRAME_SHARD_BYTES = 16 * 2**20  # ~16 MiB shards: few files, cheap single-frame reads
#: Frame codec: Blosc LZ4 with bit shuffle compresses Poisson counts ~5x and decodes fast.
FRAME_CODEC = {"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle"}
WRITE_BLOCK_BYTES = 64 * 2**20  # streamed copies hold at most ~this much (whole shards)


def dims_for(name: str, ndim: int) -> tuple[str, ...]:
    """The standard dims of ``name`` or generic ``<name>_dim<i>`` ones."""
    d = DIMS.get(name)
    if d is not None and len(d) == ndim:
        return d
    if d is not None and len(d) == ndim - 1 and name in ("probe", "object"):
        return ({"probe": "mode", "object": "slice"}[name], *d)  # probe modes / object slices
    return tuple(f"{name}_dim{i}" for i in range(ndim))
