"""RNF's frames per step: ``batch_size="auto"`` (the default) and explicit sizes."""

import pytest

from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.modalities import get as get_modality
from ptytasks.simulate.datasets import simulate


def test_auto_batch_is_16_with_the_modalitys_minimum_steps_per_epoch():
    o = RNFOptions()
    assert o.batch_size == "auto"
    assert [o.batch_for(n) for n in (1, 15, 25, 516)] == [1, 15, 16, 16]
    # far field: at least 6 steps per epoch, so sparse scans take smaller batches
    far = get_modality("farfield").min_steps_per_epoch
    assert far == 6
    assert [o.batch_for(n, far) for n in (15, 25, 49, 90, 91, 516)] == [3, 5, 9, 15, 16, 16]
    assert get_modality("nearfield").min_steps_per_epoch == 1  # near field lost with it
    assert RNFOptions(batch_size=8).batch_for(25, far) == 8  # an explicit size is kept


@pytest.mark.parametrize("bad", [0, -3, "big", True])
def test_batch_size_must_be_auto_or_positive(bad):
    with pytest.raises(ValueError, match="batch_size"):
        RNFOptions(batch_size=bad)


@pytest.fixture
def step_sizes(monkeypatch):
    import ptytasks.engines.rnf as rnf

    sizes, real = [], rnf.batches

    def spy(*args):
        for idx in real(*args):
            sizes.append(len(idx))
            yield idx

    monkeypatch.setattr(rnf, "batches", spy)
    return sizes


def test_run_steps_with_the_resolved_batch(step_sizes):
    data = simulate("farfield", frame_size=32, n_positions=25, seed=0, dose=1e6)
    r = reconstruct_rnf(data, RNFOptions(epochs=1, hidden_features=8))
    assert step_sizes == [5] * 5 and r.extras["batch_size"] == 5
    step_sizes.clear()
    r = reconstruct_rnf(data, RNFOptions(epochs=1, hidden_features=8, batch_size=10))
    assert step_sizes == [10, 10, 5] and r.extras["batch_size"] == 10


def test_near_field_auto_batch_stays_16(step_sizes):
    data = simulate("nearfield", frame_size=32, n_positions=20, seed=0, dose=1e6)
    r = reconstruct_rnf(data, RNFOptions(epochs=1, hidden_features=8))
    assert step_sizes == [16, 4] and r.extras["batch_size"] == 16
