"""The modality contract: everything that differs between ptychography modalities, held
by one object per modality and registered once.

Every other module asks the registry (:func:`modality_of`) instead of comparing modality
names; a new modality is one file defining a :class:`Modality` subclass plus one
:func:`register` call (see ``docs/extending.md``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:  # the dataset type only; modalities sit below ptytasks.data's users
    import torch

    from ptytasks.data import PtychoData
    from ptytasks.physics.models.base import ForwardModel
    from ptytasks.tiling import Tile


@dataclass(frozen=True)
class Geometry:
    """The parameters a forward model is built with: nominal, or the simulated truth.

    Attributes
    ----------
    wavelength : float
        Metres.
    distance : float or None
        Propagation distance, metres.
    positions_px : ndarray or None
        ``(scan, 2)`` probe-window corners, object pixels (scanning modalities).
    wavevectors : ndarray or None
        ``(scan, 2)`` illumination wavevectors, cycles/m (Fourier ptychography).
    pixel_size : float
        Object pixel, metres.
    truth : dict or None
        The dataset's ``ground_truth`` when the true model is asked for, else None.
    """

    wavelength: float
    distance: float | None
    positions_px: np.ndarray | None
    wavevectors: np.ndarray | None
    pixel_size: float
    truth: dict | None


# Settings only scanned data take (Modality.refuse_scanning_only), with what they count.
SCANNING_ONLY = {"probe_modes": "probe modes", "n_slices": "object slices"}

class Modality:
    """What varies by modality. Subclasses set the class attributes and implement
    :meth:`build_model` and :meth:`plan_tiles`.

    Attributes
    ----------
    name : str
        The ``PtychoData.modality`` string.
    scanning : bool
        Frames are taken at scan positions (``positions_px``); False: at illumination
        angles (``wavevectors``).
    localized_probe : bool
        A probe window smaller than the object is scanned over it (its footprint weights
        the stitching; blind probe estimates apply). False: full-frame illumination.
    has_surface : bool
        A coded surface lies between specimen and detector (calibrated, learned by RNF).
    has_pupil : bool
        An imaging pupil takes the probe's place (its Zernike prior is calibrated).
    far_field_detector : bool
        Frames are far-field diffraction patterns (what the single-shot networks invert).
    camera_background : bool
        Frames are camera images with a per-frame additive floor (offset, stray light):
        RNF learns one per frame by default (``RNFOptions.learn_background="auto"``).
        False: counting detectors, whose empty pixels read zero.
    pixel_detector : bool
        Frames come from a hybrid pixel (photon- or electron-counting) detector: ingest
        masks the split wide pixels of its chip boundaries and hot pixels found in the
        frames (:mod:`ptytasks.detector`). False: cameras, where a coded surface or an
        image's own structure can look like a hot pixel.
    spun_wavelet : bool
        RNF's wavelet term cycle-spun (``RNFOptions.wavelet_spin="auto"``). Near field:
        every frame lights the field with a speckled wavefront the object can absorb, and
        one decimated Haar level leaves half the neighbouring pairs free to; spun, the
        held-out error fell 0.88-0.91x (0.99x on a trapped case). Far field: 0.96-1.05x
        per tuning cell, over the rule's bound; Fourier 1.00x; coded untested
        (hypotheses 31-32, ``docs/rnf.md``).
    min_steps_per_epoch : int
        RNF's ``batch_size="auto"`` takes at most 16 frames per step and at least this
        many steps per epoch (1: always 16). Far field: 6 -- its sparse scans are limited
        by optimiser steps (chosen on tuning cells; near field lost 8 % with 4-6).
    band_only_object : bool
        RNF returns its object on the measured band alone (Fourier: the synthetic
        aperture, ``FourierPtychography.band_limited``): the field's spectrum beyond it is
        constrained by no image. Held out, RNF's Fourier error 0.76-0.97x per case
        (hypothesis 70, ``docs/rnf.md``).
    rnf_wavelet_weight : float or None
        RNF's ``mu="auto"`` for this modality whatever its data term; None: the data-term
        rule's weight (``ptytasks.engines.data_term``). Fourier: 0 -- the object it can
        determine is band-limited by the synthetic aperture, whose edges ring, and the Haar
        L1 term pulls the field towards piecewise-flat (on fresh cases 0.54-0.66x the error
        at 0.1; hypothesis 68, ``docs/rnf.md``).
    fresnel_scaled : bool
        A divergent beam magnifies the specimen (readers apply the Fresnel scaling
        theorem from the focus-to-sample distance ``z1``).
    blind_probe : str or None
        The blind probe estimator of :mod:`ptytasks.engines.blind_probe` that suits the
        illumination; None: the back-propagated root-mean frame.
    tile_margin : float
        Default tile margin (probe widths for a localized probe, else detector pixels).
    requires : tuple of (field, description)
        Dataset fields a forward model needs (``params.<key>`` for a parameter).
    simulator : str
        ``"module:function"`` simulating a dataset (resolved at call time, so the
        simulators may use everything below the engines).
    """

    name: ClassVar[str]
    scanning: ClassVar[bool] = True
    localized_probe: ClassVar[bool] = True
    has_surface: ClassVar[bool] = False
    has_pupil: ClassVar[bool] = False
    far_field_detector: ClassVar[bool] = False
    camera_background: ClassVar[bool] = False
    pixel_detector: ClassVar[bool] = False
    spun_wavelet: ClassVar[bool] = False
    min_steps_per_epoch: ClassVar[int] = 1
    band_only_object: ClassVar[bool] = False
    rnf_wavelet_weight: ClassVar[float | None] = None
    fresnel_scaled: ClassVar[bool] = False
    blind_probe: ClassVar[str | None] = None
    tile_margin: ClassVar[float] = 0.5
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    simulator: ClassVar[str]

    def build_model(self, data: PtychoData, g: Geometry, dtype: torch.dtype) -> ForwardModel:
        """The forward model of ``data`` with geometry ``g``."""
        raise NotImplementedError

    def plan_tiles(self, data: PtychoData, grid: tuple[int, int], *,
                   margin: float | None = None, guard: int | None = None) -> list[Tile]:
        """Tiles covering ``data`` on a ``grid`` (``margin``: default :attr:`tile_margin`;
        ``guard``: the unenforced band at a detector crop's edge, where it applies)."""
        raise NotImplementedError

    def simulate(self, **kwargs) -> PtychoData:
        """A simulated dataset (keywords of the :attr:`simulator` function)."""
        module, func = self.simulator.split(":")
        return getattr(importlib.import_module(module), func)(**kwargs)

    def simulate_keywords(self) -> frozenset[str]:
        """The keyword arguments :meth:`simulate` accepts."""
        import inspect

        module, func = self.simulator.split(":")
        fn = getattr(importlib.import_module(module), func)
        return frozenset(inspect.signature(fn).parameters)

    def sample_pixel(self, wavelength: float, distance: float | None,
                     detector_pixel: float | None, frame_shape: tuple[int, int]) -> float | None:
        """The object pixel (m) implied by the detector geometry, or None when the file
        must give it (readers of foreign files call this)."""
        return None

    def band_limit(self, data: PtychoData) -> float | None:
        """The highest spatial frequency, cycles per object pixel, that ``data``'s frames
        measure in every direction, where it lies below Nyquist; None: up to Nyquist
        (scanning modalities, whose object pixel is set by the detector). The half-data
        FRC searches no higher (:func:`ptytasks.evaluation.half_data_frc`)."""
        return None

    #: names the rule of :meth:`half_split` in the half-data tiles' keys (a new rule, new keys)
    half_split_rule: ClassVar[str] = "whole-scan"

    def half_split(self, data: PtychoData) -> tuple[np.ndarray, np.ndarray]:
        """The frame indices of the two interleaved halves of ``data`` for the half-data
        FRC, each spanning what the whole set spans: a checkerboard of a full raster scan,
        else alternate frames in scan order
        (:func:`ptytasks.metrics.frc.half_split_indices`)."""
        from ptytasks.metrics.frc import half_split_indices

        return half_split_indices(data.positions_px if data.positions_px is not None
                                  else data.n_frames)  # fmt: skip

    def refuse_scanning_only(self, **settings: int) -> None:
        """Refuse ``probe_modes`` or ``n_slices`` other than 1 on data that are not scanned
        (Fourier ptychography: a pupil, no probe to mix, no slices), which an engine would
        otherwise drop silently. The one rule the pipeline's checks and RNF both apply.

        Raises
        ------
        ValueError
            Naming the first such setting, e.g. ``"probe_modes: fourier data have no probe
            modes (scanning data only), not 3"``.
        """
        if self.scanning:
            return
        for name, value in settings.items():
            if int(value) != 1:
                raise ValueError(f"{name}: {self.name} data have no {SCANNING_ONLY[name]} "
                                 f"(scanning data only), not {value}")  # fmt: skip

    def __repr__(self) -> str:
        return f"<modality {self.name}>"


_REGISTRY: dict[str, Modality] = {}


def register(modality: Modality) -> Modality:
    """Add ``modality`` to the registry (once per name) and return it."""
    if modality.name in _REGISTRY:
        raise ValueError(f"modality {modality.name!r} is already registered")
    _REGISTRY[modality.name] = modality
    return modality


def names() -> tuple[str, ...]:
    """The registered modality names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Modality:
    """The registered modality ``name`` (ValueError naming the known ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; choose one of "
                         f"{', '.join(_REGISTRY)}") from None  # fmt: skip


def modality_of(data: PtychoData) -> Modality:
    """The modality object of a dataset."""
    return get(data.modality)
