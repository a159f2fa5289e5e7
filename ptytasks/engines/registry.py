"""One entry point for every engine: ``run_engine(name, data, settings)``.

The pipeline (and the CLI) pick engines by name; this module maps generic settings onto
each engine's typed options, so the flows never import an engine directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ptytasks.data import PtychoData
from ptytasks.engines.result import ReconstructionResult

ENGINES = ("rnf", "epie", "rpie", "pine", "learned")
#: Engines that can make the quick object prior of the calibration step (not RNF itself).
PRIOR_ENGINES = tuple(e for e in ENGINES if e != "rnf")


def _options(cls, settings: dict, mapping: dict):
    """``cls`` built from ``mapping`` plus the ``settings`` keys that are its fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(settings) - names - set(_GENERIC)
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no option(s) {sorted(unknown)}; known: {sorted(names)}"
        )
    kw = {k: v for k, v in mapping.items() if k in names}
    kw.update({k: v for k, v in settings.items() if k in names})
    return cls(**kw)


# Settings every engine understands (mapped onto each engine's own names).
_GENERIC = ("epochs", "learn_positions", "learn_probe")


def run_engine(
    name: str,
    data: PtychoData,
    settings: dict | None = None,
    *,
    object_prior: np.ndarray | None = None,
    probe_prior: np.ndarray | None = None,
    surface_prior: np.ndarray | None = None,
    pupil_prior: np.ndarray | None = None,
    callback: Callable[[int, dict], object] | None = None,
    checkpoint: str | None = None,
) -> ReconstructionResult:
    """Reconstruct ``data`` with engine ``name``.

    Parameters
    ----------
    name : {"rnf", "epie", "rpie", "pine", "learned"}
        Fourier-ptychography data runs ``epie``/``rpie`` as the Fourier PIE form;
        ``pine`` is ePIE with the learned denoising step (scanning modalities);
        ``learned`` is single-shot network inversion of far-field frames
        (:mod:`ptytasks.engines.learned`; no epochs).
    settings : dict
        ``epochs``, ``learn_positions``, ``learn_probe`` plus any field of the engine's
        options dataclass (``batch_size``, ``alpha``, ``mu``, ``loss``, ``seed``, ...).
    object_prior, probe_prior : arrays, optional
        Starting object and probe (the priors the RNF residuals are learned on).
    surface_prior, pupil_prior : arrays, optional
        Coded-surface prior (RNF learns on it; ePIE/rPIE project through it, fixed) and
        Fourier-pupil prior (RNF and the Fourier PIE).
    callback : ``callback(epoch, info)`` progress hook.
    checkpoint : path for the RNF engine's resumable state.

    Raises
    ------
    ptytasks.probe_estimate.ProbeCollapsed
        The probe's power shrank into a few pixels (checked after every epoch where the
        engine reports its probe, and on the result): the run stops with a message rather
        than writing a reconstruction of dots.
    """
    from ptytasks.probe_estimate import check_probe

    scanning = data.modality != "fourier" and name != "learned"

    def watched(epoch: int, info: dict):
        if scanning and info.get("probe") is not None:
            check_probe(info["probe"], epoch=epoch)
        return callback(epoch, info) if callback is not None else None

    result = _run(name, data, settings, object_prior=object_prior, probe_prior=probe_prior,
                  surface_prior=surface_prior, pupil_prior=pupil_prior, callback=watched,
                  checkpoint=checkpoint)  # fmt: skip
    if scanning and result.probe is not None:
        check_probe(result.probe)
    return result


def _run(
    name: str,
    data: PtychoData,
    settings: dict | None,
    *,
    object_prior,
    probe_prior,
    surface_prior,
    pupil_prior,
    callback,
    checkpoint,
) -> ReconstructionResult:
    """:func:`run_engine` without the probe check."""
    s = dict(settings or {})
    epochs = int(s.get("epochs", 50))
    learn_pos = bool(s.get("learn_positions", False))
    learn_probe = bool(s.get("learn_probe", True))
    if name in ("epie", "rpie"):
        if data.modality == "fourier":
            from ptytasks.engines.fourier_pie import reconstruct_fourier_pie
            from ptytasks.engines.options import FourierPIEOptions

            opts = _options(
                FourierPIEOptions,
                s,
                {"variant": name, "iterations": epochs, "update_pupil": learn_probe},
            )
            return reconstruct_fourier_pie(
                data, opts, object_init=object_prior, pupil_init=pupil_prior, callback=callback
            )
        from ptytasks.engines.options import PIEOptions, PositionCorrectionOptions
        from ptytasks.engines.pie import model_from_data, reconstruct_pie

        model = None
        if data.modality == "coded":
            # The coded surface is known (calibrated): PIE projects through it.
            model = model_from_data(data)
            if surface_prior is not None:
                surf = np.asarray(surface_prior, np.complex64)
                model.surface.data = model.surface.data.new_tensor(surf)

        opts = _options(PIEOptions, s, {
            "variant": name, "iterations": epochs, "update_probe": learn_probe,
            "position_correction": PositionCorrectionOptions() if learn_pos else None,
        })  # fmt: skip
        return reconstruct_pie(
            data, opts, object_init=object_prior, probe_init=probe_prior, model=model,
            callback=callback, detector_mask=data.meta.get("tile_mask"),
        )  # fmt: skip
    if name == "pine":
        if data.modality not in ("farfield", "nearfield"):
            raise ValueError(f"engine 'pine' runs scanning (far/near-field) data, not "
                             f"{data.modality!r}; use epie, rpie or rnf")
        from ptytasks.engines.options import PositionCorrectionOptions
        from ptytasks.engines.pine import PINEOptions, reconstruct_pine

        opts = _options(PINEOptions, s, {
            "iterations": epochs, "update_probe": learn_probe,
            "position_correction": PositionCorrectionOptions() if learn_pos else None,
        })  # fmt: skip
        return reconstruct_pine(data, opts, object_init=object_prior, probe_init=probe_prior,
                                callback=callback)  # fmt: skip
    if name == "rnf":
        from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf

        opts = _options(RNFOptions, s, {"epochs": epochs, "learn_positions": learn_pos,
                                        "learn_probe": learn_probe})  # fmt: skip
        return reconstruct_rnf(
            data, opts, object_prior=object_prior, probe_prior=probe_prior,
            surface_prior=surface_prior, pupil_prior=pupil_prior,
            callback=callback, checkpoint=checkpoint,
        )  # fmt: skip
    if name == "learned":
        from ptytasks.engines.learned import LearnedOptions, reconstruct_learned

        opts = _options(LearnedOptions, s, {})
        return reconstruct_learned(data, opts, probe_prior=probe_prior, callback=callback)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
