"""RNF checkpoints: resumed only under the same options and inputs, never unpickled.

Tiny far-field set (24 px frames, 9 positions), 2-3 epochs: a few seconds in all.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from ptytasks.engines.checkpoint import (
    FORMAT,
    CheckpointError,
    StaleCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.simulate.datasets import simulate
from tests.engines.helpers import Killed, kill_after

BASE = {"epochs": 3, "batch_size": 3, "hidden_features": 16}


class Planted:
    """Unpickling this makes a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def ff():
    return simulate("farfield", frame_size=24, n_positions=9, overlap=0.6, scan="raster",
                    probe="gaussian", seed=0)


@pytest.fixture(scope="module")
def killed(ff, tmp_path_factory):
    """A checkpoint of ``BASE`` killed after 2 of 3 epochs (bytes, copied per test)."""
    ck = tmp_path_factory.mktemp("killed") / "run.ckpt"
    with pytest.raises(Killed):
        reconstruct_rnf(ff, RNFOptions(**BASE), checkpoint=ck, callback=kill_after(2))
    return ck.read_bytes()


@pytest.mark.parametrize("change", [{"epochs": 1}, {"loss": "l2"}, {"mu": 0.0}, {"seed": 1},
                                    {"learn_positions": True}])
def test_changed_option_is_never_resumed(ff, killed, tmp_path, change):
    ck = tmp_path / "run.ckpt"
    ck.write_bytes(killed)
    seen = []
    (name, new), = change.items()
    with pytest.raises(StaleCheckpoint, match=f"{name}: .* -> {new!r}") as exc:
        reconstruct_rnf(ff, RNFOptions(**{**BASE, **change}), checkpoint=ck,
                        callback=lambda e, i: seen.append(e))
    assert exc.value.file == str(ck) and exc.value.field == "options"
    assert seen == [] and ck.read_bytes() == killed  # refused before any training


def test_other_inputs_are_never_resumed(ff, killed, tmp_path):
    ck = tmp_path / "run.ckpt"
    ck.write_bytes(killed)
    frames = np.array(ff.frames)
    frames[4, 12, 12] *= 1.5  # one pixel of one frame
    moved = ff.positions_px.copy()
    moved[0] += 0.5  # one nominal scan position
    prior = np.full(ff.object_shape, 0.9, np.complex64)
    probe = np.ones(ff.frame_shape, np.complex64)
    masked = np.ones(ff.frame_shape, bool)
    masked[0, 0] = False
    for data, kw in ((replace(ff, frames=frames), {}), (replace(ff, positions_px=moved), {}),
                     (ff, {"object_prior": prior}), (ff, {"probe_prior": probe}),
                     (replace(ff, probe=probe), {}),  # another probe in the file
                     (replace(ff, meta={**ff.meta, "mask": masked}), {})):
        with pytest.raises(StaleCheckpoint, match="other frames, priors or geometry"):
            reconstruct_rnf(data, RNFOptions(**BASE), checkpoint=ck, **kw)


def test_same_options_resume_exactly(ff, killed, tmp_path):
    full = reconstruct_rnf(ff, RNFOptions(**BASE))
    ck = tmp_path / "run.ckpt"
    ck.write_bytes(killed)
    seen = []
    # checkpoint_every and cuda_graphs do not change the computation: they may differ
    res = reconstruct_rnf(ff, RNFOptions(**BASE, checkpoint_every=5, cuda_graphs=False),
                          checkpoint=ck,
                          callback=lambda e, i: seen.append(e))
    assert seen == [2]
    np.testing.assert_allclose(res.object, full.object, rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.loss_history, full.loss_history, rtol=1e-5)


def test_auto_precision_resumes_in_the_precision_it_was_saved_in(ff, tmp_path, monkeypatch):
    # "auto" is bfloat16 on a machine that multiplies it natively, float32 elsewhere: a run
    # checkpointed on the one and resumed on the other continues as it began.
    import ptytasks.fields.complex_layers as layers

    ck = tmp_path / "run.ckpt"
    monkeypatch.setattr(layers, "native_bfloat16", lambda device: True)
    saved_on = reconstruct_rnf(ff, RNFOptions(**BASE))
    with pytest.raises(Killed):
        reconstruct_rnf(ff, RNFOptions(**BASE), checkpoint=ck, callback=kill_after(2))
    monkeypatch.setattr(layers, "native_bfloat16", lambda device: False)
    here = reconstruct_rnf(ff, RNFOptions(**BASE))
    res = reconstruct_rnf(ff, RNFOptions(**BASE), checkpoint=ck)
    np.testing.assert_allclose(res.object, saved_on.object, rtol=0, atol=1e-5)
    assert np.abs(here.object - saved_on.object).max() > 1e-4  # the precisions differ


@pytest.mark.parametrize("how", ["torch.save", "pickle2", "pickle5"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_planted_pickle_is_refused_not_run(ff, tmp_path, how):
    ck, marker = tmp_path / "run.ckpt", tmp_path / "code-ran"
    payload = {"format": FORMAT, "epoch": 0, "x": Planted(marker)}
    if how == "torch.save":
        torch.save(payload, ck)
    else:
        ck.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))
    why = "Python object posix.mkdir" if how != "pickle5" else "not a torch checkpoint"
    with pytest.raises(CheckpointError, match=f"refused to load: .*{why}") as exc:
        reconstruct_rnf(ff, RNFOptions(**BASE), checkpoint=ck)
    assert str(ck) in str(exc.value) and "weights_only=False" not in str(exc.value)
    assert not marker.exists()


def test_foreign_and_old_files(tmp_path):
    ck = tmp_path / "run.ckpt"
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"\[checkpoint\]: refused to load: not a torch"):
        load_checkpoint(ck)
    torch.save({"weights": torch.zeros(2)}, ck)  # loads safely, but is not ours
    with pytest.raises(CheckpointError, match=r"\[format\]: not a"):
        load_checkpoint(ck)
    torch.save({"format": "ptyflow-rnf-checkpoint/1", "epoch": 3}, ck)
    with pytest.raises(StaleCheckpoint, match="written as ptyflow-rnf-checkpoint/1"):
        load_checkpoint(ck)
    save_checkpoint(ck, {"epoch": 3})  # our format, without what resuming is checked on
    assert load_checkpoint(ck)["epoch"] == 3
    assert load_checkpoint(tmp_path / "absent.ckpt") is None
