"""The run store's step names live in storage.layout, and are the names on disk: renaming
one would leave existing stores unreadable (and every step of them rerun)."""

from __future__ import annotations

from storage import layout as L


def test_step_names_are_the_ones_on_disk():
    steps = (L.RAW, L.TRUTH, L.SUBSAMPLE, L.PRIORS, L.TILING, L.RECONSTRUCT, L.MOSAIC, L.METRICS)
    assert steps == ("raw", "raw/truth", "subsample", "priors", "tiling", "reconstruct",
                     "mosaic", "metrics")  # fmt: skip
