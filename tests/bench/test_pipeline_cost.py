"""The pipeline-cost suite's arithmetic: fixed-compute tiles and the per-tile fit."""

from __future__ import annotations

import numpy as np

from bench.suite_pipeline import line_fit, replicate


def test_replicated_tiles_share_geometry_under_new_ids():
    tile = {"tile_id": "t0000", "core": [0, 8, 0, 8], "object_shape": [16, 16]}
    reps = replicate(tile, 3, "w1n3-")
    assert [t["tile_id"] for t in reps] == ["w1n3-0000", "w1n3-0001", "w1n3-0002"]
    assert all({k: v for k, v in t.items() if k != "tile_id"} ==
               {k: v for k, v in tile.items() if k != "tile_id"} for t in reps)  # fmt: skip


def test_line_fit_separates_fixed_cost_and_resolves_a_small_per_tile_time():
    """15 s of fixed cost and 2.05 s per tile (2 s compute + 50 ms overhead), 0.1 s noise:
    the slope's interval holds the truth and excludes the bare compute time."""
    rng = np.random.default_rng(0)
    n = np.array([8, 16, 24, 32, 48])
    t = 15.0 + 2.05 * n + rng.normal(0, 0.1, n.size)
    f = line_fit(n, t)
    assert f["per_tile_ci95_s"][0] < 2.05 < f["per_tile_ci95_s"][1]
    assert f["per_tile_ci95_s"][0] > 2.0
    assert abs(f["fixed_s"] - 15.0) < 1.0 and f["dof"] == 3


def test_overhead_interval_covers_the_truth_95_percent_of_the_time():
    """Known overhead (0.3 s on 4.5 s tiles), flow fit over 5 tile counts (3 dof) and 16
    direct tiles: the 95 % interval holds the truth in ~95 % of simulated experiments
    (Welch-Satterthwaite dof), not ~99 % (the flow fit's dof alone)."""
    from bench.suite_pipeline import overhead_interval

    rng = np.random.default_rng(1)
    n = np.array([8, 16, 24, 32, 48])
    hits = []
    for _ in range(2000):
        compute = 4.5 + rng.normal(0, 0.35, 16)
        flow = line_fit(n, 20.0 + 4.8 * n + rng.normal(0, 2.5, n.size))
        lo, hi = overhead_interval(flow, compute)["overhead_per_tile_ci95_s"]
        hits.append(lo < 0.3 < hi)
    assert 0.93 < np.mean(hits) < 0.97
