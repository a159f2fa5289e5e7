"""Test objects: every kind, ranges, determinism, the complex mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptytasks.simulate import objects


@pytest.mark.parametrize("kind", objects.KINDS)
def test_every_kind_has_shape_and_range(kind):
    img = objects.image(kind, (40, 56), seed=3)
    assert img.shape == (40, 56)
    assert img.dtype == np.float64
    assert img.min() >= 0.0 and img.max() <= 1.0
    if kind != "flat":
        assert img.std() > 0.01, "a test image needs contrast"


def test_random_kinds_are_seeded():
    for kind in ("dead_leaves", "blobs", "layout"):
        a = objects.image(kind, (48, 48), seed=1)
        np.testing.assert_array_equal(a, objects.image(kind, (48, 48), seed=1))
        assert not np.array_equal(a, objects.image(kind, (48, 48), seed=2))


def test_dead_leaves_covers_everything_with_flat_patches():
    img = objects.dead_leaves((64, 64), seed=0)
    # Occluding discs: a handful of grey levels dominate neighbourhoods (many equal pixels).
    assert np.mean(img[1:] == img[:-1]) > 0.5


def test_layout_is_manhattan_wiring_on_a_few_levels():
    img = objects.ic_layout((96, 96), seed=4, pitch=4.0)
    # Horizontal wires below, vertical above: away from edges, rows and columns are constant
    # over long runs, and the grey levels are the layers' sums (0, 0.35, 0.45, 0.8, 1).
    levels = np.array([0.0, 0.35, 0.45, 0.8, 1.0])
    on_level = np.min(np.abs(img[..., None] - levels), axis=-1) < 1e-9
    assert on_level.mean() > 0.7  # the rest are anti-aliased wire edges
    assert np.mean(img[:, 1:] == img[:, :-1]) > 0.6 and np.mean(img[1:] == img[:-1]) > 0.6
    assert 0.1 < img.mean() < 0.6


def test_siemens_star_is_point_symmetric_for_even_spokes():
    s = objects.siemens_star((64, 64), n_spokes=16)
    # theta -> theta + pi maps sin(16 theta) onto itself: the star is symmetric about the
    # centre (up to sub-samples lying exactly on a spoke edge).
    assert np.abs(s - s[::-1, ::-1]).mean() < 0.01
    assert 0.3 < s[16:48, 16:48].mean() < 0.7


def test_usaf_target_has_bars_of_decreasing_width():
    t = objects.usaf_target((96, 96))
    assert 0.05 < t.mean() < 0.5
    assert set(np.unique(np.round(t, 6))) >= {0.0, 1.0}


def test_complex_object_ranges_and_types():
    o = objects.complex_object(
        (32, 40), "camera", amplitude_range=(0.5, 0.9), phase_range=(-1.0, 2.0), seed=0
    )
    assert o.dtype == np.complex64 and o.shape == (32, 40)
    a, p = np.abs(o), np.angle(o)
    assert a.min() >= 0.5 - 1e-5 and a.max() <= 0.9 + 1e-5
    assert p.min() >= -1.0 - 1e-5 and p.max() <= 2.0 + 1e-5
    # Amplitude and phase come from different pictures (camera phase, moon amplitude).
    assert abs(np.corrcoef(a.ravel(), p.ravel())[0, 1]) < 0.9


def test_phase_object_and_torch_output():
    import torch

    o = objects.complex_object((16, 16), "flat", phase_object=True, as_torch=True)
    assert isinstance(o, torch.Tensor) and o.dtype == torch.complex64
    np.testing.assert_allclose(o.abs().numpy(), 1.0, atol=1e-6)
    assert float(o.angle().max()) == pytest.approx(math.pi / 2, abs=1e-3)


def test_same_amplitude_image():
    o = objects.complex_object((24, 24), "usaf", amplitude_kind="same", phase_range=(0, 1))
    np.testing.assert_allclose((np.abs(o) - 0.8) / 0.2, np.angle(o), atol=1e-4)


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown object kind 'nope'.*camera"):
        objects.image("nope", (8, 8))
