"""Mini-batch orders (``ptytasks/engines/batching.py``) and the CPU heap setting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptytasks.engines.batching import batches, compact_batches
from ptytasks.simulate.scans import fermat_spiral


def _positions(n=200, seed=0):
    pos = torch.as_tensor(np.asarray(fermat_spiral(4.0, n_positions=n)), dtype=torch.float64)
    return pos - pos.min(0).values


def _box_area(pos, groups, window=32):
    areas = []
    for g in groups:
        p = pos[g]
        ext = p.max(0).values - p.min(0).values + window
        areas.append(float(ext.prod()))
    return float(np.mean(areas))


@pytest.mark.parametrize("n,bs", [(200, 16), (100, 16), (17, 4), (5, 16), (1, 1)])
def test_compact_batches_are_a_permutation(n, bs):
    pos = _positions(n)
    gen = torch.Generator().manual_seed(0)
    groups = compact_batches(pos, bs, gen)
    flat = torch.cat(groups).tolist()
    assert sorted(flat) == list(range(n))
    assert len(groups) == math.ceil(n / bs)
    # full batches but one (visited in random order, so the short one may be anywhere)
    assert sum(len(g) != bs for g in groups) <= 1


def test_compact_batches_are_compact_and_change_every_epoch():
    pos = _positions(200)
    gen = torch.Generator().manual_seed(1)
    rand = batches("random", pos, 200, 16, gen)
    e1 = batches("compact", pos, 200, 16, gen)
    e2 = batches("compact", pos, 200, 16, gen)
    # a compact batch's bounding box is a fraction of a random batch's
    assert _box_area(pos, e1) < 0.5 * _box_area(pos, rand)
    assert _box_area(pos, e2) < 0.5 * _box_area(pos, rand)
    # regrouped each epoch: not the same partition twice
    part = lambda gs: sorted(tuple(sorted(g.tolist())) for g in gs)  # noqa: E731
    assert part(e1) != part(e2)


def test_batches_are_seeded_and_random_mode_is_unchanged():
    pos = _positions(50)
    a = batches("compact", pos, 50, 8, torch.Generator().manual_seed(3))
    b = batches("compact", pos, 50, 8, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # "random" is the engine's former order: one randperm cut in runs
    r = batches("random", pos, 50, 8, torch.Generator().manual_seed(3))
    ref = torch.randperm(50, generator=torch.Generator().manual_seed(3)).split(8)
    assert all(torch.equal(x, y) for x, y in zip(r, ref, strict=True))
    # no positions (Fourier ptychography): random order even when compact is asked for
    f = batches("compact", None, 50, 8, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(f, ref, strict=True))
    with pytest.raises(ValueError, match="batching"):
        batches("sorted", pos, 50, 8, torch.Generator())


def test_rnf_runs_with_compact_batches():
    from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
    from ptytasks.simulate.datasets import simulate

    data = simulate("farfield", frame_size=24, n_positions=16, overlap=0.6, probe="gaussian",
                    seed=0)
    probe = data.ground_truth["probe"]
    res = reconstruct_rnf(data, RNFOptions(epochs=2, batch_size=4, hidden_features=8,
                                           batching="compact"), probe_prior=probe)
    assert np.isfinite(res.loss_history).all() and res.loss_history[-1] < res.loss_history[0]
    with pytest.raises(ValueError, match="batching"):
        RNFOptions(batching="spiral")


def test_keep_heap_is_idempotent_and_can_be_switched_off(monkeypatch):
    import ptytasks.engines.cpu_heap as ch

    monkeypatch.setattr(ch, "_done", None)
    assert ch.keep_heap("cuda") is False and ch._done is None  # a GPU run leaves it alone
    monkeypatch.setenv("PTYFLOW_KEEP_HEAP", "0")
    assert ch.keep_heap() is False
    monkeypatch.setattr(ch, "_done", None)
    monkeypatch.delenv("PTYFLOW_KEEP_HEAP")
    first = ch.keep_heap()
    assert ch.keep_heap() is first  # cached: mallopt runs once per process
