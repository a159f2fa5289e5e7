"""Mixed-state probes (ptytasks.physics.modes): the operations leave the physics unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ptytasks.physics.models import FarField, NearField
from ptytasks.physics.modes import (
    add_modes,
    orthogonalize_modes,
    partially_coherent_modes,
    power_fractions,
)
from ptytasks.simulate import simulate
from tests.physics.test_models import gradcheck_model, rand_c

IDX = torch.tensor([0, 1])


def _gram(p):
    a = p.reshape(p.shape[0], -1)
    return a @ a.conj().T


def test_orthogonalize_keeps_every_intensity_and_sorts_by_power():
    obj, probe = rand_c(16, 16), rand_c(3, 8, 8, seed=1)
    m = FarField([[1.0, 2.0], [6.0, 5.0]], (16, 16), (8, 8), dtype=torch.float64)
    q = orthogonalize_modes(probe)
    g = _gram(q)
    off = g - torch.diag(torch.diagonal(g))
    assert float(off.abs().max()) < 1e-10 * float(g.abs().max())  # orthogonal
    power = torch.diagonal(g).real
    assert bool((power[:-1] >= power[1:]).all())  # strongest first
    assert torch.allclose(m(obj, q, IDX), m(obj, probe, IDX))  # same mixed state
    f = power_fractions(q)
    assert torch.allclose(f.sum(), torch.tensor(1.0, dtype=f.dtype))
    assert torch.allclose(f, power / power.sum())


def test_add_modes_keeps_the_counts_and_gives_orthogonal_small_modes():
    p = torch.as_tensor(simulate("farfield", seed=0).ground_truth["probe"]).to(torch.complex128)
    q = add_modes(p, 3, fraction=0.05)
    assert q.shape == (3, *p.shape)
    assert torch.allclose((q.abs() ** 2).sum(), (p.abs() ** 2).sum())
    assert np.allclose(power_fractions(q).numpy(), [0.9, 0.05, 0.05])
    g = _gram(q)
    assert float((g - torch.diag(torch.diagonal(g))).abs().max()) < 1e-8 * float(g.abs().max())
    assert torch.allclose(q[0], p * 0.9**0.5)  # the given mode keeps its shape
    assert add_modes(p, 1).shape == (1, *p.shape)
    with pytest.raises(ValueError, match="fraction"):
        add_modes(p, 3, fraction=0.6)


def test_added_modes_are_orthogonal_to_given_modes_that_overlap():
    """A two-mode start whose modes overlap (a file's, not orthogonalised): each added mode
    is orthogonal to both (projecting on each in turn left 0.28 overlap)."""
    p = torch.as_tensor(simulate("farfield", seed=0).ground_truth["probe"]).to(torch.complex128)
    two = torch.stack([p, p + 0.3 * torch.roll(p, 2, -1)])
    q = add_modes(two, 4, fraction=0.05)
    a = q.reshape(4, -1) / torch.linalg.vector_norm(q.reshape(4, -1), dim=1, keepdim=True)
    overlap = (a[2:] @ a[:2].conj().T).abs()
    assert float(overlap.max()) < 1e-8


def test_partially_coherent_modes_have_the_requested_fractions_and_power():
    p = simulate("farfield", seed=0).ground_truth["probe"]
    q = torch.as_tensor(partially_coherent_modes(p, (0.6, 0.3, 0.1), seed=3))
    assert np.allclose(power_fractions(q).numpy(), [0.6, 0.3, 0.1], atol=1e-5)
    assert np.isclose(float((q.abs() ** 2).sum()), float((np.abs(p) ** 2).sum()), rtol=1e-4)
    g = _gram(q.to(torch.complex128))
    assert float((g - torch.diag(torch.diagonal(g))).abs().max()) < 1e-4 * float(g.abs().max())
    with pytest.raises(ValueError, match="sum to 1"):
        partially_coherent_modes(p, (0.6, 0.3))


def test_simulated_mixed_state_is_the_incoherent_sum_of_its_modes():
    d = simulate("farfield", seed=0, mode_fractions=(0.6, 0.3, 0.1))
    modes = d.ground_truth["probe"]
    assert modes.shape == (3, *d.frame_shape)
    coherent = simulate("farfield", seed=0)
    # Same dose: the counts per frame are unchanged by the partial coherence...
    assert np.isclose(d.frames.sum(), coherent.frames.sum(), rtol=1e-3)
    # ...but the patterns differ (the incoherent sum blurs them).
    assert np.abs(d.frames - coherent.frames).max() > 0.1 * coherent.frames.max()
    m = FarField(d.ground_truth["positions_px"], d.object_shape, d.frame_shape)
    obj = torch.as_tensor(d.ground_truth["object"])
    each = sum(m(obj, torch.as_tensor(k), torch.arange(3)) for k in modes)
    assert np.allclose(each.numpy(), d.frames[:3], rtol=1e-4, atol=1e-2)


def test_nearfield_gradcheck_with_probe_modes():
    m = NearField(
        [[1.3, 2.6], [3.45, 0.7]],
        (10, 10),
        (6, 6),
        wavelength=1e-6,
        distance=5e-5,
        pixel_size=1e-6,
        dtype=torch.float64,
    )
    gradcheck_model(
        m,
        rand_c(10, 10),
        rand_c(3, 6, 6, seed=1),
        ["positions", "distance"],
        scales={"distance": 1e-5},
    )


# --- files: every stored mode is read ----------------------------------------------------
def test_readers_keep_all_probe_modes(tmp_path):
    from storage.cxi import read_cxi, write_cxi
    from storage.errors import DataError
    from storage.readers import read_any
    from storage.store import RunStore

    d = simulate("farfield", seed=0, n_positions=9, mode_fractions=FR, known_probe=True)
    back = read_cxi(write_cxi(tmp_path / "m.cxi", d))
    assert back.probe.shape == (3, *d.frame_shape)
    np.testing.assert_allclose(back.probe, d.probe)
    # tike / PtychoShelves layout: probe (1, 1, modes, y, x)
    frames = np.fft.ifftshift(d.frames, axes=(-2, -1))
    np.savez(
        tmp_path / "t.npz", data=frames[None], scan=d.positions_px[None], probe=d.probe[None, None]
    )
    t = read_any(tmp_path / "t.npz")
    assert t.probe.shape == (3, *d.frame_shape)
    # generic HDF5 through a mapping: the modes as stored, (1, modes, y, x) here
    import h5py

    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["frames"] = d.frames
        f["pos"] = d.positions_px
        f["probe"] = d.probe[None]
    g = read_any(tmp_path / "g.h5", mapping={"frames": "frames", "positions": "pos",
                                             "positions_units": "px", "probe": "probe",
                                             "wavelength": 1e-10, "pixel_size": 1e-8})
    assert g.probe.shape == (3, *d.frame_shape)
    np.testing.assert_allclose(g.probe, d.probe)
    np.savez(
        tmp_path / "bad.npz",
        data=frames[None],
        scan=d.positions_px[None],
        probe=np.ones((2, 3, *d.frame_shape), complex),
    )
    with pytest.raises(DataError, match="probe"):
        read_any(tmp_path / "bad.npz")
    # the run store names the axis "mode"
    store = RunStore.create(tmp_path / "r.zarr")
    store.write_raw(back)
    assert store.read_raw().probe.shape == (3, *d.frame_shape)
    with warnings.catch_warnings():  # xarray may warn: no consolidated metadata
        warnings.simplefilter("ignore", RuntimeWarning)
        tree = store.open_datatree()
    assert tree["raw"].probe.dims == ("mode", "probe_y", "probe_x")


FR = (0.6, 0.3, 0.1)
