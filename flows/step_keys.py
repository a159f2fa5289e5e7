"""What a step's key hashes beyond its parameters: the content of the files a step reads
(network weights, a measured pupil, a surface reference) and the engines' and blind probe's
constants, so a store never serves a result made from other inputs or under other
defaults (:mod:`flows.stages` keys its steps with these)."""

from __future__ import annotations

import functools
from pathlib import Path

from flows.params import CalibrationParams, EngineParams
from storage.atomic import file_digest

__all__ = ["calibration_key", "input_digest", "network_weights"]


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)  # size and mtime key the cache: a rewrite is hashed again


def network_weights(engine: EngineParams, calibration: CalibrationParams) -> dict[str, str]:
    """SHA-256 of every network weights file a tile reads, by role ({} when none).

    Part of the tile fingerprints (and the facility's parameter check), so weights retrained
    in place under the same path or preset name are not mistaken for the old ones. A missing
    file gets ``"missing"``: the engine then raises its own error naming it.
    """
    from ptytasks.engines.registry import SPECS

    files: dict[str, list[Path]] = {}
    # a preset may resolve to a per-frame-size file (ppn_default_64.pt) that is only chosen
    # once the frames are read: the specs list every file the preset can resolve to
    spec = SPECS[engine.engine]
    if spec.weight_files is not None:
        files[spec.weight_roles[0]] = spec.weight_files(engine.options)
    prior = SPECS.get(calibration.object)  # "uniform" has no spec
    if prior is not None and prior.weight_files is not None:
        # the prior runs with default options but the learned prior's chosen weights
        files[prior.weight_roles[1]] = prior.weight_files({"weights": calibration.learned_weights})
    # one file: its digest alone, as before
    return {role: ",".join(input_digest(f) for f in paths) for role, paths in files.items()}


def input_digest(path: str | Path) -> str:
    """SHA-256 of a file, or of every file under a folder ("missing" when absent)."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    digests = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            digests.append("missing")
            continue
        digests.append(_digest(str(f.resolve()), st.st_size, st.st_mtime_ns))
    return ",".join(digests) or "missing"


def calibration_key(params: CalibrationParams) -> dict:
    """The calibration settings that change results: the learned prior's weights only when
    the prior is single-shot, the prior engine's defaults, the blind probe's constants and
    the content of a measured pupil or surface reference (a file re-measured in place under
    the same path is not mistaken for the old one)."""
    from ptytasks.engines import blind_probe, registry

    prior = registry.SPECS.get(params.object)  # None: "uniform"
    key = params.model_dump(exclude=None if prior and not prior.iterative else {"learned_weights"})
    if prior is not None:
        key["prior_defaults"] = registry.engine_defaults(prior.name)
    for name in ("pupil_file", "surface_reference"):
        if getattr(params, name):
            key[f"{name}_sha256"] = input_digest(getattr(params, name))
    return {**key, "blind_probe": blind_probe.settings()}
