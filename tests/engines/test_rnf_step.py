"""The RNF step's host side: boxes from frozen corners, the CUDA-graph gate, the window
check at setup. (Replaying a graph needs CUDA: ``test_rnf_cuda.py``, marked ``gpu``.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ptytasks.engines.rnf import RNFOptions, _resolve, _Setup, reconstruct_rnf
from ptytasks.engines.rnf_step import graph_blocker
from ptytasks.simulate.datasets import simulate


def _setup(data, **kw):
    o = RNFOptions(epochs=1, batch_size=4, **kw)
    dev = torch.device("cpu")
    model, rdt, cdt = _resolve(data, o, None, o.dtype, dev)
    return _Setup(data, o, model, (None,) * 4, dev, rdt, cdt), o


@pytest.fixture(scope="module")
def data():
    return simulate("farfield", frame_size=32, n_positions=25, seed=0, dose=1e6)


@pytest.mark.parametrize("region", ["auto", "bbox", "windows"])
def test_box_from_host_corners_is_the_box_from_the_positions(data, region):
    """Frozen positions: the box read from the host corners is the one the device
    positions give, batch by batch (whole object, boxes and windows alike)."""
    st, _ = _setup(data, eval_region=region, bbox_fraction=0.3)
    assert st.corners_host is not None
    gen = torch.Generator().manual_seed(3)
    kinds = set()
    for _ in range(30):
        idx = torch.randperm(data.n_frames, generator=gen)[:int(torch.randint(1, 21, (1,),
                                                                             generator=gen))]
        box = st.object_box(idx, idx)
        assert box == st.object_box(idx)  # no host index: read from the positions
        kinds.add(box == (0, 0, *data.object_shape))
        if region == "windows":
            assert torch.equal(st.under_windows(idx, *box, idx), st.under_windows(idx, *box))
    assert kinds == ({False} if region != "auto" else {True, False})


def test_learned_positions_are_read_each_step(data):
    st, _ = _setup(data, learn_positions=True)
    assert st.corners_host is None


def test_graph_gate():
    """What keeps a run's steps from a CUDA graph (checked without a GPU)."""
    d = simulate("farfield", frame_size=24, n_positions=9, seed=1)
    st, o = _setup(d)
    assert graph_blocker(st, o) == "not on CUDA"
    assert graph_blocker(st, dataclasses.replace(o, cuda_graphs=False)) == "cuda_graphs is off"
    st.device = torch.device("cuda")  # the gate only reads it
    assert graph_blocker(st, o) is None
    assert graph_blocker(st, dataclasses.replace(o, eval_region="windows")) is not None
    st2, o2 = _setup(d, learn_positions=True)
    st2.device = torch.device("cuda")
    assert graph_blocker(st2, o2) == "learned model parameters ['positions']"


def test_windows_outside_the_object_fail_before_training(data):
    bad = dataclasses.replace(data, positions_px=data.positions_px + np.array([0.0, 1e3]))
    with pytest.raises(ValueError, match="outside the"):
        reconstruct_rnf(bad, RNFOptions(epochs=1))


def test_replays_nothing_on_cpu(data):
    r = reconstruct_rnf(data, RNFOptions(epochs=1, batch_size=8, hidden_features=16))
    assert r.extras["cuda_graph"] == {"replays": 0, "blocker": "not on CUDA"}


@pytest.mark.parametrize("learn", [False, True])
def test_fourier_step_reads_no_window_check_with_frozen_wavevectors(monkeypatch, learn):
    """Frozen LED wavevectors: the pupil windows are checked once at setup, so a step makes
    no device read for them (a CUDA graph can capture it); learned ones are checked every
    step."""
    import ptytasks.physics.shifts as shifts

    d = simulate("fourier", image_size=12, upsample=2, na=0.1, na_illum=0.15, seed=0)
    st, _ = _setup(d, learn_positions=learn)
    assert st.spectrum_checked is not learn
    calls = []
    real = shifts.check_windows
    monkeypatch.setattr(shifts, "check_windows", lambda *a: calls.append(1) or real(*a))
    idx = torch.arange(4)
    pred, _ = st.predict(idx, idx)
    assert pred.shape[0] == 4 and len(calls) == (1 if learn else 0)


def test_fourier_windows_outside_the_spectrum_fail_before_training():
    d = simulate("fourier", image_size=12, upsample=2, na=0.1, na_illum=0.15, seed=0)
    bad = dataclasses.replace(d, wavevectors=d.wavevectors * 40)
    with pytest.raises(ValueError, match="outside the"):
        _setup(bad)


def test_fourier_start_pupil_is_the_prior_defocus_once():
    """A calibrated pupil (``calibration.pupil_prior``: the NA disc, the file's defocus and a
    Zernike fit) is RNF's start pupil as given: the model's own defocus is not applied on
    top of it a second time."""
    from ptytasks.calibration import pupil_prior

    d = simulate("fourier", image_size=12, upsample=2, na=0.1, na_illum=0.15, seed=0)
    d = dataclasses.replace(d, distance=20e-6)  # a defocused specimen
    prior, _ = pupil_prior(d, coefficients=[0, 0, 0, 0, 0.4])
    o = RNFOptions(epochs=1, batch_size=4)
    model, rdt, cdt = _resolve(d, o, None, o.dtype, torch.device("cpu"))
    st = _Setup(d, o, model, (None, None, None, prior), torch.device("cpu"), rdt, cdt)
    np.testing.assert_allclose(st._pupil_base().numpy(), prior, atol=1e-5)
