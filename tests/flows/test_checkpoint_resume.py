"""A tile killed mid-RNF resumes only under the same parameters (issue #22, items 1-2).

Kill at epoch 2 of 3, change one of epochs, loss, mu, seed and rerun: the stored tile must
equal a fresh run with the new parameters. The same parameters resume where it stopped.
Tiny far-field set (16 px frames, 9 positions, one tile), 1-3 epochs, one thread.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flows import stages
from flows.params import PipelineParams
from ptytasks.engines.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from storage.store import RunStore

ENGINE = {"engine": "rnf", "epochs": 3, "batch_size": 3, "options": {"hidden_features": 16}}
K = 2  # epochs done when killed


class Killed(Exception):
    pass


def _kill_after(k):
    def progress(epoch, info):
        if epoch == k - 1:
            raise Killed

    return progress


class Planted:
    """Unpickling this makes a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _params(cxi, store, **engine):
    return PipelineParams.from_mapping({"input": str(cxi), "store": str(store),
                                        "engine": {**ENGINE, **engine}})  # fmt: skip


def _prepared(cxi, store):
    """A store with every step before the tiles; its one tile."""
    p = _params(cxi, store)
    stages.ingest(str(cxi), str(store), p.ingest)
    stages.subsample(str(store), p.subsample)
    stages.calibrate(str(store), p.calibration)
    (tile,) = stages.plan(str(store), p.tiling)
    return tile


def _run(cxi, store, tile, progress=None, **engine):
    p = _params(cxi, store, **engine)
    return stages.reconstruct_tile(str(store), tile, p.engine, p.calibration,
                                   torch_threads=1, progress=progress)  # fmt: skip


def _stored(store, tile):
    g = RunStore(str(store), "r").read_group(stages.tile_step(tile["tile_id"]))
    return {k: np.asarray(g[k]) for k in ("object", "probe", "loss")}


def _ckpts(store) -> list[Path]:
    folder = Path(f"{store}.checkpoints")
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store whose tile was killed after ``K`` of 3 epochs, and its checkpoint."""
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    d = tmp_path_factory.mktemp("killed")
    cxi = d / "scan.cxi"
    write_cxi(cxi, simulate("farfield", frame_size=16, n_positions=9, known_probe=True))
    store = d / "run.zarr"
    tile = _prepared(cxi, store)
    with pytest.raises(Killed):
        _run(cxi, store, tile, progress=_kill_after(K))
    (ck,) = _ckpts(store)
    return cxi, store, tile, ck.name


def _copy(template, tmp_path):
    cxi, store, tile, ck = template
    dst = tmp_path / "run.zarr"
    shutil.copytree(store, dst)
    shutil.copytree(f"{store}.checkpoints", f"{dst}.checkpoints")
    return cxi, dst, tile, Path(f"{dst}.checkpoints") / ck


def _fresh(cxi, tmp_path, **engine):
    store = tmp_path / "fresh.zarr"
    tile = _prepared(cxi, store)
    _run(cxi, store, tile, **engine)
    return _stored(store, tile)


@pytest.mark.parametrize("change", [{"epochs": 1}, {"loss": "l2"}, {"mu": 0.0}, {"seed": 1}])
def test_changed_parameter_never_resumes_old_state(template, tmp_path, change):
    cxi, store, tile, old = _copy(template, tmp_path)
    seen = []
    ref = _run(cxi, store, tile, progress=lambda e, i: seen.append(e), **change)
    assert not ref["skipped"] and seen == list(range(change.get("epochs", 3)))  # from 0
    got, want = _stored(store, tile), _fresh(cxi, tmp_path, **change)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert not old.exists() and _ckpts(store) == []


def test_same_parameters_resume(template, tmp_path):
    cxi, store, tile, ck = _copy(template, tmp_path)
    seen = []
    ref = _run(cxi, store, tile, progress=lambda e, i: seen.append(e))
    assert seen == [K]  # continues where it stopped
    assert ck.name == f"reconstruct__{tile['tile_id']}.{ref['key']}.pt"  # the step's key
    got, want = _stored(store, tile), _fresh(cxi, tmp_path)
    np.testing.assert_allclose(got["object"], want["object"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    assert _ckpts(store) == []  # stored: the checkpoint is gone


def test_same_key_other_engine_defaults_start_afresh(template, tmp_path, caplog):
    """A checkpoint under the same key but other options (e.g. a default the code derives at
    run time, which the step key's declared defaults do not see) is dropped, not resumed."""
    cxi, store, tile, ck = _copy(template, tmp_path)
    state = load_checkpoint(ck)
    state["options"]["lr_mlp_scale"] = 1.0  # as if written by an older version
    save_checkpoint(ck, {k: v for k, v in state.items() if k != "format"})
    seen = []
    _run(cxi, store, tile, progress=lambda e, i: seen.append(e))
    assert seen == [0, 1, 2] and "lr_mlp_scale: 1.0 -> 0.3" in caplog.text
    got, want = _stored(store, tile), _fresh(cxi, tmp_path)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_other_keys_are_deleted_unread(template, tmp_path):
    cxi, store, tile, old = _copy(template, tmp_path)
    marker = tmp_path / "code-ran"
    legacy = old.with_name(f"reconstruct__{tile['tile_id']}.pt")  # the unkeyed name of v1
    torch.save({"x": Planted(marker)}, legacy)
    unrelated = old.with_name("notes.pt")
    unrelated.write_bytes(b"someone else's")
    with pytest.raises(Killed):  # seed changed, killed after its first epoch
        _run(cxi, store, tile, progress=_kill_after(1), seed=1)
    (new,) = [c for c in _ckpts(store) if c != unrelated]
    assert new != old and not old.exists() and not legacy.exists()
    assert not marker.exists() and unrelated.exists()
    epochs = stages.epoch_progress_path(str(store), stages.tile_step(tile["tile_id"]))
    assert epochs.read_text() == "1 3"


def test_planted_checkpoint_is_refused_not_run(template, tmp_path):
    cxi, store, tile, ck = _copy(template, tmp_path)
    marker = tmp_path / "code-ran"
    torch.save({"format": "ptyflow-rnf-checkpoint/2", "x": Planted(marker)}, ck)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(ck))}.*refused to load"):
        _run(cxi, store, tile)
    assert not marker.exists()
    assert not RunStore(str(store), "r").is_complete(stages.tile_step(tile["tile_id"]))
