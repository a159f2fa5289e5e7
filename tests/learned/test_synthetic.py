"""Dead-leaves training images: range, coverage, determinism, noise level, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from ptytasks.learned.synthetic import (
    MODELS,
    SIGMA,
    DenoisingStream,
    add_noise,
    dead_leaves,
    synthetic_images,
)


@pytest.mark.parametrize("model", MODELS)
def test_dead_leaves_is_8bit_in_unit_range_and_varied(model):
    img = dead_leaves(np.random.default_rng(3), 128, model)
    assert img.shape == (128, 128) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1
    np.testing.assert_allclose(img * 255, np.round(img * 255), atol=1e-4)
    # Many distinct grey levels (shapes) and edges everywhere, not a flat canvas.
    assert len(np.unique(img)) > 30
    assert np.abs(np.diff(img, axis=1)).mean() > 0.02


def test_canvas_is_covered():
    # The front-to-back painter stops when no free pixel is left: with a grey ground of
    # exactly 0 an uncovered pixel would stay 0; shapes are only 0 with probability 1/256.
    img = dead_leaves(np.random.default_rng(0), 96, "diverse")
    assert (img == 0).mean() < 0.05


def test_textured_differs_from_diverse():
    rng = lambda: np.random.default_rng(5)
    a, b = dead_leaves(rng(), 64, "diverse"), dead_leaves(rng(), 64, "textured")
    # Textured shapes are not piecewise constant: many more distinct values.
    assert len(np.unique(b)) > 2 * len(np.unique(a))


def test_seeded_and_prefix_stable():
    a = synthetic_images(4, 64, seed=1)
    b = synthetic_images(6, 64, seed=1)
    np.testing.assert_array_equal(a, b[:4])
    assert not np.array_equal(a, synthetic_images(4, 64, seed=2))
    with pytest.raises(ValueError):
        dead_leaves(np.random.default_rng(0), 32, "fractal")


def test_noise_level():
    clean = np.zeros((4, 128, 128), np.float32)
    noisy = add_noise(clean, SIGMA, np.random.default_rng(0))
    assert abs(noisy.std() - 15 / 255) < 1e-3


def test_stream_batches_reproducible_and_streaming():
    s1 = DenoisingStream(batch=4, patch=32, size=64, pool=3, refresh=1, seed=7)
    s2 = DenoisingStream(batch=4, patch=32, size=64, pool=3, refresh=1, seed=7)
    for _ in range(3):
        (n1, c1), (n2, c2) = s1.sample(), s2.sample()
        np.testing.assert_array_equal(n1, n2)
        np.testing.assert_array_equal(c1, c2)
    assert n1.shape == c1.shape == (4, 1, 32, 32)
    assert s1._next == 3 + 3  # pool of 3, one fresh image after each of 3 batches
    # Signed augmentation reaches negative values; unsigned stays in [0, 1].
    lo = min(DenoisingStream(8, 32, size=64, pool=2, seed=s).sample()[1].min() for s in range(3))
    assert lo < 0
    plain = DenoisingStream(8, 32, size=64, pool=2, signed=False, seed=0).sample()[1]
    assert plain.min() >= 0 and plain.max() <= 1
