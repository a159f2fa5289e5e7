"""Resumable RNF state on disk: one ``torch.save`` file, written atomically, never unpickled.

A checkpoint holds everything a run needs to continue exactly where it stopped: module
and optimiser state dicts, the forward model's parameters, the epoch counter, histories,
the frame-order RNG state -- and what it was computed from: the engine options and a
digest of the inputs (frames, priors, nominal model). A run resumes from a checkpoint only
when both match; otherwise :class:`StaleCheckpoint` is raised before anything is loaded,
so a changed parameter never continues state computed under the old one.

Writing goes to a temporary file in the same folder that then replaces the old one
(``os.replace`` is atomic on POSIX and Windows), so a run killed while saving leaves the
previous checkpoint intact. Reading uses ``torch.load(weights_only=True)``: only tensors
and plain containers are accepted, so a planted file that holds Python objects (a pickle
that would run code) is refused with a :class:`CheckpointError` instead of executed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ptytasks.fields.complex_layers import resolve_precision

__all__ = ["CheckpointError", "StaleCheckpoint", "inputs_digest", "load_checkpoint",
           "option_changes", "restore_state", "save_checkpoint", "save_state"]

FORMAT = "ptyflow-rnf-checkpoint/2"
#: Options that do not change the computation: a checkpoint written under other values of
#: these still resumes (every other option must match). ``cuda_graphs`` replays the same
#: steps (to the libraries' order of float sums), so it is neutral too.
RESUME_NEUTRAL = frozenset({"checkpoint_every", "cuda_graphs"})


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; names the file and the field at fault.

    Parameters
    ----------
    file : path of the checkpoint.
    field : the part at fault (``"checkpoint"`` for the file as a whole, ``"options"``, ...).
    message : what is wrong and what to do.
    """

    def __init__(self, file: str | os.PathLike, field: str, message: str):
        self.file, self.field, self.message = os.fspath(file), field, message
        super().__init__(f"{self.file} [{field}]: {message}")


class StaleCheckpoint(CheckpointError):
    """A valid checkpoint written for other options or inputs: it must not be resumed.

    Deleting it and starting afresh is safe (``flows.stages.reconstruct_tile`` does).
    """


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (a dict of tensors, state dicts and plain values) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict | None:
    """The saved state, or None when ``path`` does not exist.

    Raises
    ------
    CheckpointError
        The file is not a checkpoint of this format: unreadable, or holding Python objects
        that only a full unpickler could build (refused, never executed).
    StaleCheckpoint
        A checkpoint of an older format (it lacks what resuming is checked against).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        # Not torch's message: it suggests weights_only=False, the very thing to avoid.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        detail = [ln.replace("WeightsUnpickler error:", "").strip()
                  for ln in str(exc).splitlines()
                  if not ln.startswith(("Weights only", "Please file", "Check the doc"))]
        detail = "; ".join(d for d in detail if d) or type(exc).__name__
        if found:
            what = (f"it holds the Python object {found.group(1)}, which only an unpickler "
                    "that runs code could build")
        elif isinstance(exc, pickle.UnpicklingError):
            what = f"not a torch checkpoint ({detail})"
        else:
            what = f"unreadable ({type(exc).__name__}: {detail})"
        raise CheckpointError(path, "checkpoint", f"refused to load: {what}. ptyflow "
                              "checkpoints hold tensors and plain values only; delete the "
                              "file if you did not write it") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if isinstance(fmt, str) and fmt.startswith("ptyflow-rnf-checkpoint/") and fmt != FORMAT:
        raise StaleCheckpoint(path, "format", f"written as {fmt}, not {FORMAT}")
    if fmt != FORMAT:
        raise CheckpointError(path, "format", f"not a {FORMAT} checkpoint")
    return state


# ---------------------------------------------------------------------- what it was made from
def _feed(h, value) -> None:
    if value is None:
        h.update(b"none;")
        return
    t = torch.as_tensor(np.asarray(value)) if not torch.is_tensor(value) else value
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)};".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def inputs_digest(frames: torch.Tensor, model_state: dict, priors) -> str:
    """Hex SHA-256 of a run's inputs: frames, the nominal model's state, the priors.

    Parameters
    ----------
    frames : the frames as the engine trains on them (normalised counts).
    model_state : the forward model's ``state_dict()`` before training (scan positions in
        pixels, distance in m, wavelength in m, ...).
    priors : sequence of arrays or None (object, probe, surface, pupil priors).
    """
    h = hashlib.sha256()
    _feed(h, frames)
    for name in sorted(model_state):
        h.update(name.encode() + b"=")
        _feed(h, model_state[name])
    for p in priors:
        _feed(h, p)
    return h.hexdigest()


def option_changes(saved: dict, current: dict) -> list[str]:
    """``"name: old -> new"`` for every option (but :data:`RESUME_NEUTRAL`) that differs."""
    out = []
    for k in sorted(set(saved) | set(current)):
        old, new = saved.get(k, "<unset>"), current.get(k, "<unset>")
        if k not in RESUME_NEUTRAL and _plain(old) != _plain(new):
            out.append(f"{k}: {old!r} -> {new!r}")
    return out


def _plain(v):
    # Tuples come back as tuples, but compare lists and tuples alike (JSON-made options).
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


# ---------------------------------------------------------------------- the RNF engine's state
def _fields(st) -> dict:
    return {"object": st.obj_field, "probe": st.probe_field, "surface": st.surface_field,
            "pupil": st.pupil_field}


def _mlps(st) -> list:
    """The networks of the run's neural fields (pixel fields have none)."""
    nets = (getattr(f, "net", None) for f in _fields(st).values() if f is not None)
    return [n.mlp for n in nets if n is not None]


def _precision(st) -> str | None:
    """The hidden-product precision the run's fields compute in (``"auto"`` resolved on this
    run's device), or ``None`` without a neural field."""
    for mlp in _mlps(st):
        p = next(mlp.parameters())
        return resolve_precision(mlp.config.hidden_precision, p.device, p.dtype)
    return None


def save_state(path, st, gen: torch.Generator, hist: dict, epoch: int, opts,
               inputs: str) -> None:
    """Checkpoint an RNF run (``st``: its ``rnf._Setup``) after ``epoch`` epochs."""
    save_checkpoint(path, {
        "fields": {k: f.state_dict() for k, f in _fields(st).items() if f is not None},
        "optimizer": st.optim.state_dict(),
        "model": st.model.state_dict(),
        "geometry": {"shadow": st.geometry.shadow.detach().clone(),
                     "start": st.geometry.start},
        "mode_gains": None if st.mode_gains is None else st.mode_gains.detach().clone(),
        "probe_aperture": None if st.aperture is None else st.aperture.params.detach().clone(),
        "position_affine": None if st.affine is None else st.affine.detach().clone(),
        "epoch": epoch, "rng": gen.get_state(), "history": dict(hist),
        "options": opts.to_dict(), "inputs": inputs, "hidden_precision": _precision(st),
        "shape": (st.data.n_frames, *st.data.frame_shape),
    })  # fmt: skip


def restore_state(ck: dict, path, st, gen: torch.Generator, hist: dict, opts,
                  inputs: str) -> int:
    """Load checkpoint ``ck`` (read from ``path``) into a run; the epochs it had done.

    Raises
    ------
    StaleCheckpoint
        Written for other frames, priors, model or options (nothing is loaded then).
    CheckpointError
        Its state does not fit the run's modules.
    """
    missing = {"shape", "inputs", "options", "fields", "model", "geometry", "optimizer",
               "rng", "history", "epoch"} - set(ck)
    if missing:
        raise CheckpointError(path, "checkpoint", f"lacks {sorted(missing)}")
    if tuple(ck["shape"]) != (st.data.n_frames, *st.data.frame_shape):
        raise StaleCheckpoint(path, "shape", "written for a dataset of another shape")
    if ck["inputs"] != inputs:
        raise StaleCheckpoint(path, "inputs", "written for other frames, priors or geometry")
    changed = option_changes(ck["options"], opts.to_dict())
    if changed:
        raise StaleCheckpoint(path, "options", "written with other options ("
                              + "; ".join(changed) + ")")
    named = _fields(st)
    if set(ck["fields"]) != {k for k, v in named.items() if v is not None}:
        raise CheckpointError(path, "fields", f"fields {sorted(ck['fields'])} do not match "
                              "the options")
    try:
        for k, sd in ck["fields"].items():
            named[k].load_state_dict(sd)
        st.model.load_state_dict(ck["model"])
        with torch.no_grad():
            st.geometry.shadow.copy_(ck["geometry"]["shadow"])
            if st.mode_gains is not None:
                st.mode_gains.copy_(ck["mode_gains"])
            if st.aperture is not None:
                st.aperture.params.copy_(ck["probe_aperture"])
            if st.affine is not None:
                st.affine.copy_(ck["position_affine"])
        st.geometry.start = list(ck["geometry"]["start"])
        st.optim.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(path, "state", f"does not fit this run ({exc}); delete the "
                              "checkpoint to start afresh") from None
    # "auto" resolves per machine: a run resumed on other hardware continues in the
    # precision it was checkpointed in, so the resumed run is the run that was saved.
    for mlp in _mlps(st):
        if mlp.config.hidden_precision == "auto" and ck.get("hidden_precision"):
            mlp.config = replace(mlp.config, hidden_precision=ck["hidden_precision"])
    gen.set_state(ck["rng"])
    hist.update({k: (list(v) if isinstance(v, list) else v) for k, v in ck["history"].items()})
    return int(ck["epoch"])
