"""A tile's step in the run store: its group name, its fingerprint, its checkpoint and
epoch-progress files beside the store, and the seeds of its half-data reconstructions.

Shared by the tile stage (:func:`flows.stages.reconstruct_tile`) and the command line's
progress bar (:func:`flows.runner.store_progress`), which counts a tile done only when its
marker carries the fingerprint this run computes for it (not a stale one).
"""

from __future__ import annotations

from pathlib import Path

from flows.params import CalibrationParams, EngineParams
from flows.step_keys import calibration_key, network_weights
from storage import layout as L
from storage.atomic import fingerprint

__all__ = ["HALF_SEED_OFFSET", "checkpoint_path", "drop_stale_checkpoints",
           "epoch_progress_path", "half_seed", "tile_fingerprint", "tile_step"]

# Seeds of the half-data reconstructions relative to the full one (independent starts)
HALF_SEED_OFFSET = {"a": 1000, "b": 2000}


def tile_step(tile_id: str, half: str = "") -> str:
    """Store group of a tile's reconstruction (``half``: '', 'a' or 'b' for half-data)."""
    return f"{L.RECONSTRUCT}{'_' + half if half else ''}/{tile_id}"


def epoch_progress_path(store_path: str, step: str) -> Path:
    """File holding ``"<epochs done> <epochs>"`` of a tile being reconstructed."""
    return Path(f"{store_path}.checkpoints") / f"{step.replace('/', '__')}.epoch"


def checkpoint_path(store_path: str, step: str, key: str) -> Path:
    """The RNF checkpoint of ``step`` under step key ``key``.

    ``key`` is the key the step will be stored with (its fingerprint and its upstream
    steps' keys), so a changed parameter, prior or dataset names another file: state
    computed under the old inputs is never found, let alone resumed.
    """
    return Path(f"{store_path}.checkpoints") / f"{step.replace('/', '__')}.{key}.pt"


def drop_stale_checkpoints(store_path: str, step: str, keep: Path) -> None:
    """Delete ``step``'s checkpoints under other keys (and the unkeyed ``<step>.pt`` of
    older versions), with their leftover temporary files; and the epoch-progress file when
    no current checkpoint backs it (it would show the old run's epochs)."""
    import re

    stem = re.escape(step.replace("/", "__"))
    ours = re.compile(rf"{stem}(\.[0-9a-f]{{64}})?\.pt(\..+\.tmp)?")
    folder = keep.parent
    if folder.is_dir():
        for f in folder.iterdir():
            # keep's own temporary files may belong to a writer still running
            if ours.fullmatch(f.name) and not f.name.startswith(keep.name):
                f.unlink(missing_ok=True)
    if not keep.exists():
        epoch_progress_path(store_path, step).unlink(missing_ok=True)


def half_seed(engine: EngineParams, half: str) -> int:
    """The engine seed of half ``half`` ('a' or 'b').

    The halves must be independent reconstructions (van Heel & Schatz 2005): with one seed
    two RNF halves start from the same hash tables and MLP weights, and what the data leave
    unconstrained comes out alike in both -- a correlation the FRC reads as resolution (the
    star's RNF halves agreed up to Nyquist, 0.5 c/px).
    """
    return int(engine.settings().get("seed", 0)) + HALF_SEED_OFFSET[half]


def tile_fingerprint(tile: dict, engine: EngineParams, calibration: CalibrationParams,
                     half: str, modality) -> str:
    """The fingerprint a tile's step is stored with: the planned tile, the engine's and the
    calibration's keys, network weights by content (runs without one keep the keys they
    had), and for a half its seed, its own probe and the modality's split rule."""
    weights = network_weights(engine, calibration)
    return fingerprint(tile, engine.key(), calibration_key(calibration), half,
                       *([weights] if weights else []),
                       *([f"seed={half_seed(engine, half)}", "probe=own-half",
                          f"halves={modality.half_split_rule}"] if half else []))  # fmt: skip
