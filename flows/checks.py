"""Checks of a run's settings against its data, made once the data's modality is known:
by ``ptyflow run`` before Prefect starts and by the pipeline flow itself (a run from the
Prefect UI or a deployment comes to the flow directly), and the calibration's own by its
step. Each refusal names the field (exit code 2)."""

from __future__ import annotations

from flows.config_sources import ConfigError
from flows.params import CalibrationParams, PipelineParams
from ptytasks.engines.registry import SPECS, check_settings
from ptytasks.modalities import get as get_modality


def check_runnable(params: PipelineParams, modality: str) -> None:
    """Refuse, before Prefect and the cluster start, an engine or a prior engine that does
    not run the data's modality, and GPU workers without dask-cuda (each found only in a
    tile before, exit 1); settings and calibration files the modality cannot use (each
    ignored before).

    Raises
    ------
    flows.config_sources.ConfigError
        Naming the field (``engine.engine``, ``engine.probe_modes``, ``calibration.object``,
        ``calibration.pupil_file``, ``cluster.kind``).
    """
    mod = get_modality(modality)
    able = [n for n, s in SPECS.items() if s.supports(mod)]
    for field, name in (("engine.engine", params.engine.engine),
                        ("calibration.object", params.calibration.object)):  # fmt: skip
        spec = SPECS.get(name)  # None: "uniform", no engine
        if spec is not None and not spec.supports(mod):
            raise ConfigError(f"{field}: {name!r} does not run {modality} data ({params.input}); "
                              f"engines that do: {', '.join(able)}")
    try:  # refused before the run, naming the field and file (RNF refuses it for library callers)
        mod.refuse_scanning_only(probe_modes=params.engine.probe_modes,
                                 n_slices=params.engine.n_slices)  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"engine.{exc} ({params.input}); engine {params.engine.engine!r} "
                          "cannot take it: remove it") from None
    check_calibration_settings(params.calibration, modality)  # read by one modality each
    try:  # settings the engine's options for this modality cannot take
        check_settings(params.engine.engine, params.engine.settings(), mod)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"engine: {exc} (engine {params.engine.engine!r}, {modality} data "
                          f"{params.input})") from None
    if params.cluster.kind == "local_cuda":
        try:
            import dask_cuda  # noqa: F401
        except ImportError:
            raise ConfigError("cluster.kind 'local_cuda' needs dask-cuda: pip install "
                              "'ptyflow[gpu]' (or cluster.kind 'local' for CPU workers)") from None


def check_calibration_settings(params: CalibrationParams, modality: str) -> None:
    """Refuse a calibration setting nothing reads (each was ignored without a word): a file
    that data of ``modality`` do not read (a pupil_file with far-field data, a
    surface_reference with Fourier data), a pupil_wavelength without its pupil_file, prior
    iterations or learned weights the chosen object prior does not use.

    Raises
    ------
    flows.config_sources.ConfigError
        Naming the field and the modality.
    """
    mod = get_modality(modality)
    for field, used, kind in (("pupil_file", mod.has_pupil, "Fourier"),
                              ("pupil_wavelength", mod.has_pupil, "Fourier"),
                              ("surface_reference", mod.has_surface, "coded")):  # fmt: skip
        if getattr(params, field) is not None and not used:
            raise ConfigError(f"calibration.{field}: not used by {modality} data (only "
                              f"{kind} ptychography reads it): remove it")
    prior = SPECS.get(params.object)  # None: "uniform"
    fields = CalibrationParams.model_fields  # value-based: a Prefect round trip sets all
    for field, used in (("prior_iterations", prior is not None and prior.iterative),
                        ("learned_weights", prior is not None and not prior.iterative)):
        if getattr(params, field) != fields[field].default and not used:
            raise ConfigError(f"calibration.{field}: not read by calibration.object "
                              f"{params.object!r}: remove it")
    if params.pupil_wavelength is not None and params.pupil_file is None:
        raise ConfigError("calibration.pupil_wavelength: is the wavelength of "
                          "calibration.pupil_file, which is not set: set it or remove this")
