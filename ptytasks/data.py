"""The in-memory dataset every reader produces and every engine consumes.

Units are SI (metres); conventions for positions, wavevectors and frame centring are in
``docs/conventions.md``. Storage converts this to and from the Zarr run store and CXI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Ground-truth entries with one row per frame (restricted by :meth:`PtychoData.subset`).
PER_FRAME_TRUTH = ("positions_px", "wavevectors", "intensity_factors")


@dataclass
class PtychoData:
    """A ptychographic dataset with its physical geometry.

    Attributes
    ----------
    modality : {"farfield", "nearfield", "coded", "fourier"}
    frames : float32 ``(scan, det_y, det_x)``
        Measured intensities (counts). Far-field frames are centred (zero frequency at
        ``(N//2, N//2)``).
    wavelength : float
        Metres.
    pixel_size : float
        Object-plane pixel pitch, metres (for Fourier ptychography: the high-resolution
        reconstruction pixel).
    object_shape : (int, int)
        Shape of the object array the positions refer to.
    positions_px : float64 ``(scan, 2)`` or None
        Probe-window (or sensor-window) corners ``(y, x)`` in object pixels; scanning and
        coded modalities.
    wavevectors : float64 ``(scan, 2)`` or None
        Illumination ``(ky, kx)`` in cycles per metre; Fourier ptychography.
    distance : float or None
        Metres: sample-to-detector (far-field), effective propagation distance
        (near-field), specimen-to-coded-surface (coded), defocus (Fourier).
    detector_pixel : float or None
        Physical detector pixel pitch, metres.
    probe : complex64 ``(det_y, det_x)`` or None
        A known or initial probe (illumination) on the object-plane grid.
    params : dict[str, float]
        Further geometry with units in the key name suffix where not metres, e.g.
        ``surface_distance`` (coded: surface-to-pixels, m), ``na`` (Fourier objective NA),
        ``upsample`` (Fourier), ``z1``/``z2``/``magnification`` (cone-beam near-field).
    ground_truth : dict[str, ndarray] or None
        Simulated truth: ``object``, ``probe``, ``positions_px`` (and ``surface``, ``pupil``,
        ``wavevectors`` where they apply).
    meta : dict
        Free-form provenance (source file, dose, simulator settings).
    """

    modality: str  # a registered name: ptytasks.modalities.names()
    frames: np.ndarray
    wavelength: float
    pixel_size: float
    object_shape: tuple[int, int]
    positions_px: np.ndarray | None = None
    wavevectors: np.ndarray | None = None
    distance: float | None = None
    detector_pixel: float | None = None
    probe: np.ndarray | None = None
    params: dict[str, float] = field(default_factory=dict)
    ground_truth: dict[str, np.ndarray] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def subset(self, indices: np.ndarray) -> PtychoData:
        """The dataset restricted to frames ``indices`` (kept order). The truth's object and
        probe are shared; its per-frame entries (:data:`PER_FRAME_TRUTH`) are restricted
        too, and ``meta["kept_indices"]`` counts in the original scan's frames."""
        idx = np.asarray(indices, dtype=np.int64)
        pick = lambda a: None if a is None else a[idx]
        # Lazily read frames (storage.readers.LazyFrames) stay lazy: nothing is read here.
        lazy = not isinstance(self.frames, np.ndarray) and hasattr(self.frames, "take")
        frames = self.frames.take(idx) if lazy else self.frames[idx]
        meta = dict(self.meta)
        kept = meta.get("kept_indices")  # a subset of a subset: still the original's frames
        ok = isinstance(kept, np.ndarray) and kept.shape == (self.n_frames,)
        meta["kept_indices"] = kept[idx] if ok else idx
        truth = None if self.ground_truth is None else {
            k: (np.asarray(v)[idx] if k in PER_FRAME_TRUTH and v is not None else v)
            for k, v in self.ground_truth.items()}
        return PtychoData(
            modality=self.modality,
            frames=frames,
            wavelength=self.wavelength,
            pixel_size=self.pixel_size,
            object_shape=self.object_shape,
            positions_px=pick(self.positions_px),
            wavevectors=pick(self.wavevectors),
            distance=self.distance,
            detector_pixel=self.detector_pixel,
            probe=self.probe,
            params=dict(self.params),
            ground_truth=truth,
            meta=meta,
        )
