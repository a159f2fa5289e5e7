"""The engine registry: ``run_engine(name, data, settings)`` and what each engine is.

Each engine is one :class:`EngineSpec`: its options class (an
:class:`~ptytasks.engines.options.EngineOptions`), the function running it, the modalities
it supports, and what the pipeline needs to know about it (an object prior? resumable?
which weight files change its results?). The flows, the parameter enums, the UI form and
the calibration's prior engines all read :data:`SPECS`; adding an engine is one spec here
(see ``docs/extending.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ptytasks.data import PtychoData
from ptytasks.engines.result import ReconstructionResult
from ptytasks.modalities import Modality, modality_of

Callback = Callable[[int, dict], object]


@dataclass(frozen=True)
class Priors:
    """Starting points handed to an engine (arrays or None)."""

    object: np.ndarray | None = None
    probe: np.ndarray | None = None
    surface: np.ndarray | None = None
    pupil: np.ndarray | None = None


@dataclass(frozen=True)
class EngineSpec:
    """One engine as the pipeline sees it.

    Attributes
    ----------
    name : str
        The name users pick (``engine.engine`` in the parameters).
    options : callable
        ``options(name, modality) -> EngineOptions subclass`` the settings are mapped on.
    run : callable
        ``run(name, data, settings, priors, callback, checkpoint) -> ReconstructionResult``.
    supports : callable
        ``supports(modality) -> bool``: the modalities the engine runs.
    summary : str
        One line for the UI and the docs.
    iterative : bool
        Takes ``epochs`` (False: single-shot inversion).
    learns_probe : bool
        Reports a probe whose collapse the registry watches.
    object_prior : bool
        Can make the calibration step's quick object prior.
    resumable : bool
        Keeps a checkpoint the pipeline resumes from.
    residual_on_priors : bool
        Learns a residual on the priors it is given (they stay its base: RNF), rather
        than overwriting them.
    weight_files : callable or None
        ``weight_files(options) -> list[Path]``: files whose contents change the results
        (hashed into the tile fingerprints).
    weight_roles : (str, str)
        The fingerprint keys of those files when the engine reconstructs and when it makes
        the object prior (the keys stores were written with).
    """

    name: str
    options: Callable
    run: Callable
    supports: Callable[[Modality], bool]
    summary: str
    iterative: bool = True
    learns_probe: bool = True
    object_prior: bool = True
    resumable: bool = False
    residual_on_priors: bool = False
    weight_files: Callable[[dict], list[Path]] | None = field(default=None)
    weight_roles: tuple[str, str] = ("engine", "object_prior")


def options_from(cls, settings: dict, mapping: dict):
    """``cls`` (an ``EngineOptions`` dataclass) built from ``mapping`` plus the ``settings``
    keys that are its fields; ValueError naming any setting that is neither a field nor
    generic (``epochs``, ``learn_positions``, ``learn_probe``, ``position_search``)."""
    names = cls.field_names()
    unknown = set(settings) - names - set(GENERIC_SETTINGS)
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no option(s) {sorted(unknown)}; known: {sorted(names)}"
        )
    kw = {k: v for k, v in mapping.items() if k in names}
    kw.update({k: v for k, v in settings.items() if k in names})
    return cls(**kw)


# Settings every engine understands (mapped onto each engine's own names).
GENERIC_SETTINGS = ("epochs", "learn_positions", "learn_probe", "position_search")


def _pie_mapping(name: str, s: dict, pupil: bool) -> dict:
    from ptytasks.engines.options import PositionCorrectionOptions

    epochs, learn_probe = int(s.get("epochs", 50)), bool(s.get("learn_probe", True))
    if pupil:
        if s.get("learn_positions"):  # refused, not ignored
            raise ValueError("learn_positions: Fourier PIE does not refine the LED "
                             "wavevectors; engine 'rnf' does")
        return {"variant": name, "iterations": epochs, "update_pupil": learn_probe}
    pc = PositionCorrectionOptions() if s.get("learn_positions") else None
    return {"variant": name, "iterations": epochs, "update_probe": learn_probe,
            "position_correction": pc}  # fmt: skip


def _pie_options(name: str, mod: Modality):
    from ptytasks.engines.options import FourierPIEOptions, PIEOptions

    return FourierPIEOptions if mod.has_pupil else PIEOptions


def _run_pie(name, data, s, p: Priors, callback, checkpoint) -> ReconstructionResult:
    """ePIE/rPIE: the Fourier PIE form where a pupil replaces the probe; the scanning
    form otherwise (through the calibrated coded surface, held fixed, where there is one).
    Both enforce the data's own detector mask."""
    mod = modality_of(data)
    opts = options_from(_pie_options(name, mod), s, _pie_mapping(name, s, mod.has_pupil))
    if mod.has_pupil:
        from ptytasks.engines.fourier_pie import reconstruct_fourier_pie

        return reconstruct_fourier_pie(data, opts, object_prior=p.object, pupil_prior=p.pupil,
                                       callback=callback)
    from ptytasks.engines.pie import reconstruct_pie
    from ptytasks.modalities import model_for

    model = None
    if mod.has_surface and p.surface is not None:
        model = model_for(data)
        model.surface.data = model.surface.data.new_tensor(np.asarray(p.surface, np.complex64))
    return reconstruct_pie(data, opts, object_prior=p.object, probe_prior=p.probe, model=model,
                           callback=callback)


def _pine_options(name, mod):
    from ptytasks.engines.pine import PINEOptions

    return PINEOptions


def _run_pine(name, data, s, p: Priors, callback, checkpoint) -> ReconstructionResult:
    from ptytasks.engines.pine import PINEOptions, reconstruct_pine

    mapping = _pie_mapping("epie", s, pupil=False)
    mapping.pop("variant")
    opts = options_from(PINEOptions, s, mapping)
    return reconstruct_pine(data, opts, object_prior=p.object, probe_prior=p.probe,
                            callback=callback)  # fmt: skip


def _pine_weights(opts: dict) -> list[Path]:
    from ptytasks.learned import DEFAULT_WEIGHTS

    return [Path(str(opts.get("denoiser") or DEFAULT_WEIGHTS))]


def _rnf_options(name, mod):
    from ptytasks.engines.rnf_options import RNFOptions

    return RNFOptions


def _run_rnf(name, data, s, p: Priors, callback, checkpoint) -> ReconstructionResult:
    from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf

    opts = options_from(RNFOptions, s, {"epochs": int(s.get("epochs", 50)),
                                    "learn_positions": bool(s.get("learn_positions", False)),
                                    "learn_probe": bool(s.get("learn_probe", True))})  # fmt: skip
    return reconstruct_rnf(data, opts, object_prior=p.object, probe_prior=p.probe,
                           surface_prior=p.surface, pupil_prior=p.pupil, callback=callback,
                           checkpoint=checkpoint)  # fmt: skip


def _learned_options(name, mod):
    from ptytasks.engines.learned import LearnedOptions

    return LearnedOptions


def _run_learned(name, data, s, p: Priors, callback, checkpoint) -> ReconstructionResult:
    from ptytasks.engines.learned import LearnedOptions, reconstruct_learned

    opts = options_from(LearnedOptions, s, {})
    return reconstruct_learned(data, opts, probe_prior=p.probe, callback=callback)


def _learned_weights(opts: dict) -> list[Path]:
    from ptytasks.learned.inversion import preset_files

    return preset_files(opts.get("weights"), str(opts.get("model", "ppn")))


_ALL = lambda mod: True  # noqa: E731

#: Every engine, by name (the first is the default); plug-ins add theirs with :func:`register`.
SPECS: dict[str, EngineSpec] = {
    s.name: s
    for s in (
        EngineSpec("rnf", _rnf_options, _run_rnf, _ALL, "residual neural field",
                   object_prior=False, resumable=True, residual_on_priors=True),
        EngineSpec("epie", _pie_options, _run_pie, _ALL, "ePIE (Fourier PIE for FP data)"),
        EngineSpec("rpie", _pie_options, _run_pie, _ALL, "rPIE (Fourier PIE for FP data)"),
        EngineSpec("pine", _pine_options, _run_pine, lambda m: m.localized_probe,
                   "ePIE with a learned denoising step", weight_files=_pine_weights,
                   weight_roles=("denoiser", "prior_denoiser")),
        EngineSpec("learned", _learned_options, _run_learned, lambda m: m.far_field_detector,
                   "single-shot network inversion", iterative=False, learns_probe=False,
                   weight_files=_learned_weights),
    )
}  # fmt: skip
#: The built-in engines (the parameter enums and the UI form list these).
ENGINES = tuple(SPECS)
#: The default engine (``ptyflow run``, the demo, the benchmark headlines).
DEFAULT_ENGINE = ENGINES[0]
#: Engines that can make the quick object prior of the calibration step (not RNF itself).
PRIOR_ENGINES = tuple(n for n, s in SPECS.items() if s.object_prior)


def register(spec: EngineSpec) -> EngineSpec:
    """Add an engine (a plug-in; the built-in ones are in :data:`SPECS` already)."""
    if spec.name in SPECS:
        raise ValueError(f"engine {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    return spec


def get(name: str) -> EngineSpec:
    """The spec of engine ``name`` (ValueError naming the known engines otherwise)."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(SPECS)}") from None


def check_settings(name: str, settings: dict, mod: Modality) -> None:
    """Raise ``ValueError`` (or ``TypeError``) where ``settings`` cannot run engine ``name``
    on modality ``mod``: an option its options class for ``mod`` lacks (``batch_size``
    with Fourier PIE), a value the class refuses, a generic setting it cannot honour --
    found before any tile runs instead of inside one."""
    spec = get(name)
    if spec.run is _run_pie:  # (PINE runs no Fourier data: its mapping refuses nothing)
        _pie_mapping(name, settings, mod.has_pupil)
    options_from(spec.options(name, mod), settings, {})


def option_classes(name: str) -> set:
    """The options classes engine ``name`` maps its settings on, over the modalities it runs."""
    from ptytasks.modalities import get as get_modality
    from ptytasks.modalities import names as modality_names

    spec = get(name)
    mods = [m for m in map(get_modality, modality_names()) if spec.supports(m)]
    return {spec.options(name, m) for m in mods}


def engine_defaults(name: str) -> dict:
    """The defaults of engine ``name``'s options classes, by class name: hashed into step
    keys, so a store never serves results computed under a default that has changed."""
    return {c.__name__: c.defaults() for c in sorted(option_classes(name), key=str)}


def option_names(name: str) -> frozenset[str]:
    """The option names engine ``name`` takes on any modality it runs (beside the generic
    ``epochs``, ``learn_positions``, ``learn_probe``)."""
    return frozenset().union(*(c.field_names() for c in option_classes(name)))


def check_position_model(name: str, value) -> None:
    """ValueError unless engine ``name`` takes ``learn_positions=value``.

    ``True`` / ``False`` (each frame's position corrected, or none) suit every engine; a
    named position model (RNF's ``"affine"``, ``"local"``) only an engine whose own options
    have a ``learn_positions`` field.
    """
    if value in (None, True, False) or "learn_positions" in option_names(name):
        return
    raise ValueError(f"learn_positions={value!r} is not a position model of engine {name!r}, "
                     "which corrects each frame's position (learn_positions: true)")


def run_engine(
    name: str,
    data: PtychoData,
    settings: dict | None = None,
    *,
    object_prior: np.ndarray | None = None,
    probe_prior: np.ndarray | None = None,
    surface_prior: np.ndarray | None = None,
    pupil_prior: np.ndarray | None = None,
    callback: Callback | None = None,
    checkpoint: str | None = None,
) -> ReconstructionResult:
    """Reconstruct ``data`` with engine ``name``.

    Parameters
    ----------
    name : {"rnf", "epie", "rpie", "pine", "learned"}
        Fourier-ptychography data runs ``epie``/``rpie`` as the Fourier PIE form;
        ``pine`` is ePIE with the learned denoising step (localized-probe modalities);
        ``learned`` is single-shot network inversion of far-field frames
        (:mod:`ptytasks.engines.learned`; no epochs).
    settings : dict
        ``epochs``, ``learn_positions``, ``learn_probe`` plus any field of the engine's
        options dataclass (``batch_size``, ``alpha``, ``mu``, ``loss``, ``seed``, ...).
        ``position_search`` (False; True or a dict of
        :class:`~ptytasks.engines.position_search.PositionSearchOptions` fields) first
        moves the scan positions by the annealed search, with the probe prior (or the
        data's probe) held fixed: for position errors beyond the refinement's ~2 px reach.
    object_prior, probe_prior : arrays, optional
        Starting object and probe (the priors the RNF residuals are learned on).
    surface_prior, pupil_prior : arrays, optional
        Coded-surface prior (RNF learns on it; ePIE/rPIE project through it, fixed) and
        Fourier-pupil prior (RNF and the Fourier PIE).
    callback : ``callback(epoch, info)`` progress hook.
    checkpoint : path for a resumable engine's state (others ignore it).

    Raises
    ------
    ValueError
        An unknown engine, an engine that does not run this modality, unknown options, or
        a position model the engine does not have (:func:`check_position_model`).
    ptytasks.probe_estimate.ProbeCollapsed
        The probe's power shrank into a few pixels (checked after every epoch where the
        engine reports its probe, and on the result): the run stops with a message rather
        than writing a reconstruction of dots.
    """
    from ptytasks.probe_estimate import check_probe

    spec = get(name)
    check_position_model(name, (settings or {}).get("learn_positions"))
    mod = modality_of(data)
    if not spec.supports(mod):
        fit = [n for n, s in SPECS.items() if s.supports(mod)]
        raise ValueError(f"engine {name!r} does not run {data.modality!r} data; use one of "
                         f"{', '.join(fit)}")  # fmt: skip
    watch = mod.scanning and spec.learns_probe

    def watched(epoch: int, info: dict):
        if watch and info.get("probe") is not None:
            check_probe(info["probe"], epoch=epoch)
        return callback(epoch, info) if callback is not None else None

    priors = Priors(object_prior, probe_prior, surface_prior, pupil_prior)
    settings = dict(settings or {})
    search = settings.pop("position_search", False)
    if search:
        data = _searched(data, search, probe_prior)
    result = spec.run(name, data, settings, priors, watched,
                      checkpoint if spec.resumable else None)  # fmt: skip
    if watch and result.probe is not None:
        check_probe(result.probe)
    return result


def _searched(data, search, probe):
    """``data`` with the corners of :func:`~ptytasks.engines.position_search.
    search_positions` (``search``: True for its frozen settings, or a dict of
    :class:`~ptytasks.engines.position_search.PositionSearchOptions` fields)."""
    from ptytasks.engines.position_search import PositionSearchOptions, search_positions

    probe = probe if probe is not None else data.probe
    if probe is None:
        raise ValueError("position_search needs a probe: give a probe prior or data with one "
                         "(it searches with the probe held fixed)")  # fmt: skip
    opts = PositionSearchOptions(**search) if isinstance(search, dict) else \
        PositionSearchOptions()
    # the same frames (not a copy of them: they may be large or lazily read), new corners
    return replace(data, positions_px=search_positions(data, probe, opts))


__all__ = ["ENGINES", "PRIOR_ENGINES", "SPECS", "EngineSpec", "GENERIC_SETTINGS", "Priors",
           "engine_defaults", "option_classes",
           "get", "option_names", "options_from", "register", "run_engine"]
