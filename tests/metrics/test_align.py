"""Alignment recovers known shifts, phase ramps and complex scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from ptytasks.metrics import (
    align,
    complex_error,
    estimate_ramp,
    global_scale,
    phase_ramp,
    register_shift,
    subpixel_shift,
)

SHIFT = (2.3, -1.7)
RAMP = (0.03, -0.05)  # rad/px: ~0.6 and ~1 cycle across 128 px
C = 1.7 * np.exp(0.9j)


def make_object(n: int = 128, seed: int = 1) -> np.ndarray:
    """Periodic textured complex object: amplitude 0.8 +- 0.2, phase of ~1 rad rms."""
    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.standard_normal((n, n)), 2, mode="wrap")
    p = gaussian_filter(rng.standard_normal((n, n)), 3, mode="wrap")
    return (0.8 + 0.2 * a / a.std()) * np.exp(1j * p / p.std())


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return make_object()


def distort(ref, shift=SHIFT, ramp=RAMP, c=C):
    """recon = c * ramp * (ref moved by +shift): align must apply -shift, remove ramp, 1/c."""
    return c * phase_ramp(ref.shape, ramp) * subpixel_shift(ref, shift)


def test_subpixel_shift_convention(ref):
    # out(r) = x(r - d): an integer shift equals np.roll
    np.testing.assert_allclose(
        subpixel_shift(ref, (3, -2)), np.roll(ref, (3, -2), (0, 1)), atol=1e-12
    )


def test_register_shift_recovers_subpixel_shift(ref):
    d = register_shift(subpixel_shift(ref, SHIFT), ref)
    np.testing.assert_allclose(d, [-2.3, 1.7], atol=0.05)


def test_align_recovers_all_parameters(ref):
    x = distort(ref).astype(np.complex64)
    assert complex_error(x, ref, align=False) > 0.5  # the distortion is not a trivial one
    out, info = align(x, ref)
    np.testing.assert_allclose(info["shift_px"], [-2.3, 1.7], atol=0.05)
    np.testing.assert_allclose(info["ramp"], RAMP, atol=1e-3)
    assert info["scale"] == pytest.approx(1 / 1.7, rel=1e-3)
    assert info["phase"] == pytest.approx(-0.9, abs=1e-3)
    assert out.dtype == np.complex64
    err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert err < 1e-3 and info["error"] < 1e-3
    assert complex_error(x, ref) < 1e-3


@pytest.mark.parametrize("ramp", [(-0.3, 0.25), (1.2, -1.6)])
def test_align_wrapped_ramp_and_large_shift(ref, ramp):
    # 0.3 rad/px wraps ~6 times across the field, 1.6 rad/px ~30 times; the complex-ratio
    # fit must not care, and the ramp must not bias the shift.
    x = distort(ref, shift=(10.4, -7.2), ramp=ramp)
    _, info = align(x, ref)
    np.testing.assert_allclose(info["shift_px"], [-10.4, 7.2], atol=0.05)
    np.testing.assert_allclose(info["ramp"], ramp, atol=1e-3)
    assert info["error"] < 1e-3


def test_align_non_periodic_crop_with_mask():
    # Realistic case: the reconstruction is a different window of the same object, compared
    # over an interior mask; edges are not periodic.
    big = make_object(192, seed=2)
    ref = big[32:160, 32:160]
    x = C * phase_ramp(ref.shape, RAMP) * subpixel_shift(big, SHIFT)[32:160, 32:160]
    mask = np.zeros(ref.shape, bool)
    mask[16:-16, 16:-16] = True
    _, info = align(x, ref, mask)
    np.testing.assert_allclose(info["shift_px"], [-2.3, 1.7], atol=0.05)
    np.testing.assert_allclose(info["ramp"], RAMP, atol=2e-3)
    assert info["scale"] == pytest.approx(1 / 1.7, rel=1e-2)
    assert info["error"] < 0.02


def test_pieces(ref):
    a = estimate_ramp(phase_ramp(ref.shape, RAMP) * ref, ref)
    np.testing.assert_allclose(a, RAMP, atol=1e-4)
    c = global_scale(C * ref, ref)
    assert c == pytest.approx(1 / C, rel=1e-9)


def test_flags_and_torch_input(ref):
    x = torch.from_numpy(distort(ref, shift=(0.0, 0.0), ramp=(0.0, 0.0)).astype(np.complex64))
    out, info = align(x, torch.from_numpy(ref), shift=False, ramp=False, scale=False)
    assert isinstance(out, np.ndarray)
    assert np.all(info["shift_px"] == 0) and np.all(info["ramp"] == 0)
    assert info["scale"] == 1.0
    np.testing.assert_allclose(np.abs(out), np.abs(x.numpy()), rtol=1e-6)  # phase only
    assert info["phase"] == pytest.approx(-0.9, abs=1e-4)


def test_real_images():
    img = np.abs(make_object(64, seed=3))
    out, info = align(3.0 * subpixel_shift(img, (1.25, 0.5)), img)
    assert not np.iscomplexobj(out)
    np.testing.assert_allclose(info["shift_px"], [-1.25, -0.5], atol=0.01)
    assert info["scale"] == pytest.approx(1 / 3, rel=1e-3)
    assert info["error"] < 1e-3


@pytest.mark.parametrize("flat", [np.zeros((64, 64)), np.full((64, 64), 0.7 + 0.2j)])
def test_a_flat_image_registers_at_zero_shift_without_warning(ref, flat):
    """A uniform start scored against the truth has no shift to find: (0, 0), and no
    skimage warning about an empty image (it used to return an arbitrary peak)."""
    import warnings

    r = ref[:64, :64]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(register_shift(flat, r), np.zeros(2))
        assert np.array_equal(register_shift(r, flat), np.zeros(2))
    assert np.abs(register_shift(np.roll(r, 3, axis=0), r) - [-3, 0]).max() < 0.05


def test_integer_images_are_aligned_as_floats_and_narrow_tensors_convert():
    """An integer image comes back as floats (the cast truncated it while the reported
    error said 0); bfloat16 tensors convert (NumPy has no bfloat16)."""
    import torch

    from ptytasks.metrics.align import align, to_numpy

    img = np.random.default_rng(0).integers(1, 50, (32, 32)).astype(np.uint16)
    out, info = align(img, 0.5 * img.astype(float), shift=False, ramp=False)
    assert out.dtype.kind == "f" and np.abs(out - 0.5 * img).max() < 1e-4
    assert to_numpy(torch.ones(3, dtype=torch.bfloat16)).dtype == np.float32
