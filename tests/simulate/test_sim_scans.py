"""Scan patterns: steps match the requested overlap; placement and object shape."""

from __future__ import annotations

import numpy as np
import pytest

from ptytasks.simulate import scans


def test_overlap_step_round_trip():
    assert scans.step_from_overlap(40, 0.75) == pytest.approx(10.0)
    assert scans.overlap_from_step(40, 10.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="overlap"):
        scans.step_from_overlap(40, 1.0)
    with pytest.raises(ValueError, match="diameter"):
        scans.step_from_overlap(-1, 0.5)


def test_raster_step_is_exact():
    c = scans.scan_centres("raster", 30, 0.6, n_positions=100)
    assert c.shape == (100, 2) and c.dtype == np.float64
    np.testing.assert_allclose(scans.nearest_neighbour_distances(c), 12.0)
    assert scans.scan_overlap(c, 30) == pytest.approx(0.6)
    steps = np.unique(np.round(np.diff(np.unique(c[:, 1])), 9))
    np.testing.assert_allclose(steps, [12.0])


def test_raster_from_field():
    c = scans.raster(5.0, field=(20.0, 10.0))
    assert len(c) == 5 * 3
    assert c.max(0).tolist() == [20.0, 10.0]


def test_jittered_raster_stays_near_the_grid():
    grid = scans.scan_centres("raster", 30, 0.6, n_positions=64)
    jit = scans.scan_centres("jittered", 30, 0.6, n_positions=64, seed=1, jitter=0.2)
    d = jit - grid
    assert np.abs(d).max() <= 0.2 * 12.0 + 1e-12
    assert np.abs(d).max() > 0.05 * 12.0


@pytest.mark.parametrize("kind", ["fermat", "random"])
@pytest.mark.parametrize("n", [60, 250])
def test_irregular_scans_hit_the_mean_step(kind, n):
    diameter, overlap = 40.0, 0.7
    c = scans.scan_centres(kind, diameter, overlap, n_positions=n, seed=2)
    assert c.shape == (n, 2)
    step = diameter * (1 - overlap)
    nn = scans.nearest_neighbour_distances(c)
    assert nn.mean() == pytest.approx(step, rel=0.06)
    assert scans.scan_overlap(c, diameter) == pytest.approx(overlap, abs=0.03)
    if kind == "random":  # Poisson disc: nothing closer than the exclusion radius
        assert nn.min() >= step / 1.09 - 1e-9


def test_random_scan_is_seeded():
    a = scans.scan_centres("random", 20, 0.5, n_positions=30, seed=4)
    np.testing.assert_array_equal(a, scans.scan_centres("random", 20, 0.5, n_positions=30, seed=4))
    assert not np.array_equal(a, scans.scan_centres("random", 20, 0.5, n_positions=30, seed=5))


def test_place_and_object_shape():
    c = np.array([[0.0, 0.0], [10.5, 3.0], [-4.0, 20.0]])
    corners = scans.place(c, (16, 16), margin=5)
    # corner = centre - window // 2, then shifted so the smallest corner is the margin
    np.testing.assert_allclose(corners.min(0), [5.0, 5.0])
    np.testing.assert_allclose(np.diff(corners, axis=0), np.diff(c, axis=0))
    shape = scans.object_shape_for(corners, (16, 16), margin=5)
    assert shape == (int(np.ceil(corners[:, 0].max() + 21)), int(np.ceil(corners[:, 1].max() + 21)))


def test_scan_positions_fit_the_object():
    pos, shape = scans.scan_positions("fermat", 24, 0.65, (32, 32), n_positions=50, margin=4)
    assert pos.min() == pytest.approx(4.0)
    assert (pos.max(0) + 32 + 4 <= np.asarray(shape) + 1e-9).all()


def test_unknown_scan_kind():
    with pytest.raises(ValueError, match="unknown scan kind 'spiral'"):
        scans.scan_centres("spiral", 10, 0.5, n_positions=4)
