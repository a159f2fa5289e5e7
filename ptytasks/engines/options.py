"""Typed options of the projection engines (ePIE/rPIE, Fourier PIE, position correction).

Plain dataclasses, so they serialise with :func:`dataclasses.asdict` into run metadata and
flows can build them from YAML/JSON dictionaries.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Literal

# Step sizes per update rule when the caller gives none. ePIE: Maiden & Rodenburg (2009)
# use alpha = beta = 1. rPIE: Maiden, Johnson & Li (2017) recommend a small object alpha
# (0.05-0.25); the probe uses the same rPIE form with beta = 1 (the ePIE probe step).
_DEFAULT_STEPS = {"epie": (1.0, 1.0), "rpie": (0.1, 1.0)}
# rPIE with object slices (3PIE): the slices' object alpha. At 0.1 the step in a slice is
# divided by ~0.9 |psi_s|^2, and the incident waves of the inner slices are speckled, so
# their weak pixels take up to 10x steps that the other slices then undo: the slices'
# product stalled at 0.034-0.050 (2 nm apart: 2.2-2.5x the single slice's error, against
# 7.0-8.5x at 0.6; bench/results/records/slices-centred-electron-06b18f1.json).
# Chosen from 0.1 / 0.3 / 0.6 / 1.0 on tuning seeds 10 and 11 at 2 and 5 nm (the
# benchmark rule: lowest median per-case error ratio to 0.1), then scored on seeds 0-2;
# remade after 117c898 centred the simulator's electron beam (before, it was split over
# the window's corners): 0.6 0.245, 1.0 0.405, 0.3 0.490
# (bench/results/records/3pie-alpha-centred-electron-1017056.json; before:
# records/3pie-alpha-4eacdce.json).
_SLICES_RPIE_ALPHA = 0.6
# ... and while positions are corrected (the whole-pixel grid search through the slices):
# 1.0, ePIE's object step. Tuning seeds 10 / 11, 1.5 px RMS errors, 150 iterations,
# positions after: 0.1 0.711 / 0.713, 0.3 0.593 / 0.514, 0.6 0.653 / 0.513, 1.0 0.634 /
# 0.512 (0.3 lowest; 1.0 within the stated 0.02 px with the lower worst-slice error, 0.048
# against 0.068); held out, seeds 0 / 1 / 2: 0.522 / 0.775 / 0.462 px against 0.1's 0.522
# / 0.711 / 0.513, worst slice 0.045-0.054 against 0.090-0.106 (same record). The earlier
# choice of 0.1 here rested on the corner-split beam (records/3pie-alpha-positions-2f1540d).
_SLICES_POSITIONS_RPIE_ALPHA = 1.0
# Fourier PIE: the pupil is the "probe" and the spectrum windows the "object". The ePIE
# pupil step normalises by max|Phi|^2, the DC spike of the bright-field windows, so the
# pupil barely moves (EPRY's known slowness); rPIE's local |Phi|^2 with a small beta
# recovered ~1 rad of Zernike aberration in 30 epochs where beta >= 0.1 stalled
# (measured on simulate("fourier"), tests/engines/test_fourier_pie.py).
_FOURIER_STEPS = {"epie": (1.0, 1.0), "rpie": (0.1, 0.02)}


class EngineOptions:
    """The base of every engine's options dataclass: serialises to a dict, names its
    fields (what :func:`ptytasks.engines.registry.run_engine` accepts as settings)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def defaults(cls) -> dict:
        """Every field's default and the defaults resolved at run time (``_resolved``).

        Hashed into the pipeline's step keys beside the given settings: a store must not
        reuse a tile computed under a default that has since changed."""
        out = {f.name: f.default if f.default is not MISSING else f.default_factory()
               for f in fields(cls)
               if f.default is not MISSING or f.default_factory is not MISSING}  # fmt: skip
        return {**out, "_resolved": cls._resolved_defaults()}

    @classmethod
    def _resolved_defaults(cls) -> dict:
        """Defaults a field's ``None`` stands for, decided at run time (none here)."""
        return {}


@dataclass
class PositionCorrectionOptions:
    """Least-squares (gradient) scan-position refinement inside a PIE loop.

    Attributes
    ----------
    start : int
        First epoch (0-based) at which positions are refined; the object must already be
        roughly right, so a few epochs of plain PIE come first.
    every : int
        Refine every ``every`` epochs.
    step : float
        Fraction of the least-squares shift applied per visit (0 < step <= 1).
    max_shift : float
        Per-visit shift limit in pixels (keeps one bad frame from jumping away).
    max_displacement : float or None
        Total limit in pixels on how far a position may move from its initial value.
    fix_mean : bool
        Remove the mean correction after each epoch: a global translation of all positions
        only shifts the reconstruction, so it is not determined by the data.
    search_radius : int
        Half-width (pixels) of a whole-pixel grid search run every ``search_every`` epochs:
        each frame moves to the candidate offset with the lowest data error. The gradient
        step is only valid within about a pixel (fine probe/object structure); the search
        pulls frames with larger errors out of the wrong basin. 0 disables it.
    search_every : int
        Epochs between grid searches (the first is ``search_every`` epochs after ``start``,
        when the object has settled).
    """

    start: int = 5
    every: int = 1
    step: float = 1.0
    max_shift: float = 0.5
    max_displacement: float | None = None
    fix_mean: bool = True
    search_radius: int = 2
    search_every: int = 10


@dataclass
class PIEOptions(EngineOptions):
    """Options of :func:`ptytasks.engines.pie.reconstruct_pie`.

    Attributes
    ----------
    variant : {"epie", "rpie"}
        Update rule. ePIE: ``O += alpha conj(P) dpsi / max|P|^2``; rPIE:
        ``O += conj(P) dpsi / ((1 - alpha)|P|^2 + alpha max|P|^2)``; the probe likewise with
        ``beta`` and the object patch.
    iterations : int
        Epochs (full passes over all frames).
    alpha, beta : float or None
        Object and probe step sizes; None takes the variant's default (ePIE 1, 1; rPIE 0.1, 1;
        rPIE with ``n_slices > 1``: 0.6, 1, and 1, 1 while positions are corrected).
    batch_size : int
        Frames per update. 1 is the classic sequential PIE; larger batches compute the
        frames' updates together and average them where frames overlap (the mini-batch
        form), which vectorises but needs more epochs.
    update_probe : bool
        Refine the probe at all.
    probe_update_start : int
        First epoch (0-based) of probe updates; a few object-only epochs help a poor probe.
    rescale_probe : bool
        Scale the initial probe so its power matches the mean frame counts (right for a
        weakly absorbing object); switch off when the probe is known in absolute units.
    position_correction : PositionCorrectionOptions or None
        Refine scan positions (None: keep them fixed).
    probe_modes : int
        Incoherent probe modes (mixed state, Thibault and Menzel 2013). A start with fewer
        modes gets extra ones (:func:`ptytasks.physics.modes.add_modes`, 5 % of the power
        each); the modes are orthogonalised after every epoch and their power fractions
        reported (``extras["mode_power_fractions"]``). 1: a coherent probe.
    n_slices : int
        Object slices (a thick specimen, 3PIE: :mod:`ptytasks.engines.multislice_pie`);
        their spacing is the data's ``params["slice_distance"]`` (metres). 1: a thin
        object. The result's object is then ``(slices, ny, nx)``, the beam's entrance first.
    seed : int
        Seed of the per-epoch random frame order.
    shuffle : bool
        Randomise the frame order each epoch (else the data order).
    subpixel : bool
        Apply fractional positions as Fourier shifts (else round to whole pixels).
    device : str
        Torch device, e.g. ``"cpu"`` or ``"cuda"``.
    dtype : {"complex64", "complex128"}
    eps : float
        Guards divisions by small amplitudes.
    cpu_threads : int or None
        Torch intra-op threads during the run on CPU (restored afterwards). None: one
        thread when a batch is small (``batch_size * frame pixels <= 2**18``), else torch's
        setting. The sequential loop issues many tiny ops; extra OpenMP threads only
        spin-wait, and on a busy 2-core machine 2 threads ran 5-30x slower than 1.
    """

    variant: Literal["epie", "rpie"] = "rpie"
    iterations: int = 100
    alpha: float | None = None
    beta: float | None = None
    batch_size: int = 1
    update_probe: bool = True
    probe_update_start: int = 0
    rescale_probe: bool = True
    position_correction: PositionCorrectionOptions | None = None
    probe_modes: int = 1
    n_slices: int = 1
    seed: int = 0
    shuffle: bool = True
    subpixel: bool = True
    device: str = "cpu"
    dtype: Literal["complex64", "complex128"] = "complex64"
    eps: float = 1e-8
    cpu_threads: int | None = None

    def __post_init__(self):
        # from a config: true (the defaults) or a mapping of the refinement's own options
        pc = self.position_correction
        if pc is True or isinstance(pc, dict):
            self.position_correction = PositionCorrectionOptions(**({} if pc is True else pc))
        elif pc is False:
            self.position_correction = None
        elif pc is not None and not isinstance(pc, PositionCorrectionOptions):
            raise ValueError("position_correction must be true, false or a mapping of "
                             f"PositionCorrectionOptions; got {pc!r}")

    def steps(self) -> tuple[float, float]:
        """The object and probe step sizes ``(alpha, beta)`` after defaults."""
        if self.variant not in _DEFAULT_STEPS:
            raise ValueError(f"PIE variant must be 'epie' or 'rpie'; got {self.variant!r}")
        a0, b0 = _DEFAULT_STEPS[self.variant]
        if self.variant == "rpie" and self.n_slices > 1:
            a0 = (_SLICES_RPIE_ALPHA if self.position_correction is None
                  else _SLICES_POSITIONS_RPIE_ALPHA)
        return (a0 if self.alpha is None else float(self.alpha),
                b0 if self.beta is None else float(self.beta))

    @classmethod
    def _resolved_defaults(cls) -> dict:
        return {"steps": _DEFAULT_STEPS, "slices_rpie_alpha": _SLICES_RPIE_ALPHA,
                "slices_positions_rpie_alpha": _SLICES_POSITIONS_RPIE_ALPHA}


@dataclass
class FourierPIEOptions(EngineOptions):
    """Options of :func:`ptytasks.engines.fourier_pie.reconstruct_fourier_pie`.

    Attributes
    ----------
    variant : {"epie", "rpie"}
        Update rule of the spectrum (object) update; the pupil uses the same form with
        ``beta`` (EPRY: Ou, Zheng & Yang 2014).
    iterations : int
        Epochs over all LEDs.
    alpha, beta : float or None
        Spectrum and pupil steps; None takes the variant's default (ePIE 1, 1; rPIE
        0.1, 0.02: a small rPIE beta divides the pupil update by the local window power).
    update_pupil : bool
        Refine the pupil (embedded pupil recovery).
    pupil_update_start : int
        First epoch of pupil updates.
    pupil_support : bool
        Keep the pupil zero outside the objective's NA disc after each update.
    order : {"na", "data", "random"}
        LED order within an epoch: ``"na"`` (low to high illumination NA, the usual choice:
        the bright-field images fix the low frequencies first), the data order, or random.
    subpixel : bool
        Cut each LED's spectrum window at its fractional position (True, exact for data
        made by the same periodic model, e.g. the simulator) or at the nearest whole
        spectrum pixel (False, as classical FPM codes do). A fractional window is a tilt
        that wraps at the edge of the periodic field; a measured camera crop has no such
        wrap, and on the FPM blood smear (48 px crop, 15 iterations) the fractional
        windows left the two LED halves uncorrelated (half-data FRC 0.018 c/px) where
        whole-pixel windows give 0.323 (``docs/rnf.md``). On the simulator's data (noise
        free, known pupil, 10 iterations) whole-pixel windows are the worse model, error
        0.263 vs 0.028, so True stays the default.
    seed : int
    device, dtype, eps, cpu_threads : as in :class:`PIEOptions` (the LEDs are visited one
        at a time).
    """

    variant: Literal["epie", "rpie"] = "rpie"
    iterations: int = 30
    alpha: float | None = None
    beta: float | None = None
    update_pupil: bool = True
    pupil_update_start: int = 1
    pupil_support: bool = True
    order: Literal["na", "data", "random"] = "na"
    subpixel: bool = True
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["complex64", "complex128"] = "complex64"
    eps: float = 1e-8
    cpu_threads: int | None = None

    def steps(self) -> tuple[float, float]:
        if self.variant not in _FOURIER_STEPS:
            raise ValueError(f"PIE variant must be 'epie' or 'rpie'; got {self.variant!r}")
        a0, b0 = _FOURIER_STEPS[self.variant]
        return (a0 if self.alpha is None else float(self.alpha),
                b0 if self.beta is None else float(self.beta))

    @classmethod
    def _resolved_defaults(cls) -> dict:
        return {"steps": _FOURIER_STEPS}
