"""Small synthetic datasets for the storage tests."""

from __future__ import annotations

import numpy as np
import pytest

from ptytasks.data import PtychoData


def make_data(
    modality: str = "farfield", n: int = 6, frame: int = 16, truth: bool = True, seed: int = 0
) -> PtychoData:
    """A valid, tiny ``PtychoData`` of ``modality`` with random content."""
    rng = np.random.default_rng(seed)
    frames = rng.poisson(5.0, size=(n, frame, frame)).astype(np.float32)
    probe = (rng.normal(size=(frame, frame)) + 1j * rng.normal(size=(frame, frame))).astype(
        np.complex64
    )
    common = dict(frames=frames, probe=probe, meta={"dose": 1e6, "kept": np.arange(n)})
    obj_shape = (frame + 12, frame + 3 * n)
    if modality == "fourier":
        k = rng.uniform(-1e5, 1e5, size=(n, 2))
        d = PtychoData(
            "fourier",
            wavelength=532e-9,
            pixel_size=0.46e-6,
            object_shape=(64, 64),
            wavevectors=k,
            distance=10e-6,
            detector_pixel=6.5e-6,
            params={"na": 0.1, "upsample": 4.0},
            **common,
        )
    else:
        pos = np.stack([rng.uniform(0, 10, n), np.arange(n) * 3.0 + rng.uniform(0, 1, n)], 1)
        params = (
            {"z1": 3.65e-3, "z2": 1.12, "magnification": 307.8}
            if modality == "nearfield"
            else ({"surface_distance": 1e-3} if modality == "coded" else {})
        )
        d = PtychoData(
            modality,
            wavelength=1e-10,
            pixel_size=20e-9,
            object_shape=obj_shape,
            positions_px=pos,
            distance=2.0 if modality != "nearfield" else 3.6e-3,
            detector_pixel=75e-6,
            params=params,
            **common,
        )
    if truth:
        d.ground_truth = {
            "object": np.exp(1j * rng.normal(size=d.object_shape)).astype(np.complex64),
            "probe": probe.copy(),
        }
        if d.positions_px is not None:
            d.ground_truth["positions_px"] = d.positions_px.copy()
    return d


def assert_same(a: PtychoData, b: PtychoData, frames: bool = True) -> None:
    """Field-by-field equality (exact for arrays; float metadata to 1e-12 relative)."""
    assert a.modality == b.modality
    if frames:
        np.testing.assert_array_equal(np.asarray(a.frames), np.asarray(b.frames))
    for k in ("wavelength", "pixel_size", "distance", "detector_pixel"):
        va, vb = getattr(a, k), getattr(b, k)
        assert (va is None) == (vb is None), k
        if va is not None:
            assert va == pytest.approx(vb, rel=1e-12, abs=0), k
    assert tuple(a.object_shape) == tuple(b.object_shape)
    for k in ("positions_px", "wavevectors", "probe"):
        va, vb = getattr(a, k), getattr(b, k)
        assert (va is None) == (vb is None), k
        if va is not None:
            np.testing.assert_array_equal(va, vb)
            assert np.asarray(va).dtype == np.asarray(vb).dtype, k
    assert a.params == pytest.approx(b.params)
    if a.ground_truth or b.ground_truth:
        assert set(a.ground_truth) == set(b.ground_truth)
        for k, v in a.ground_truth.items():
            np.testing.assert_array_equal(v, b.ground_truth[k])
            assert np.asarray(v).dtype == np.asarray(b.ground_truth[k]).dtype, k


@pytest.fixture
def make():
    """``make(modality, n=6, frame=16, truth=True, seed=0) -> PtychoData``."""
    return make_data


@pytest.fixture
def same():
    """``same(a, b, frames=True)`` asserts two datasets are equal."""
    return assert_same
