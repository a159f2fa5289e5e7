"""What a masked detector pixel holds -- a saturated marker, a module gap's garbage -- must
change nothing in an RNF run: not the data scale, the data-term rule, the noise threshold
or the prior's power match (audit of the RNF engine: a masked column of 65535 moved the
scale 200x and the object's start 14x)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ptytasks.engines.rnf import reconstruct_rnf
from ptytasks.engines.rnf_options import RNFOptions
from ptytasks.simulate.datasets import simulate


@pytest.mark.parametrize("known_probe", [True, False])
def test_the_values_of_masked_pixels_change_nothing(known_probe):
    d = simulate("farfield", frame_size=24, n_positions=12, overlap=0.65, seed=3, dose=1e5,
                 known_probe=known_probe)  # fmt: skip
    mask = np.ones(d.frame_shape, bool)
    mask[:, 5] = False  # a dead column, as a file's bad-pixel mask marks it
    runs = []
    for fill in (0.0, 65535.0):
        f = np.array(d.frames, np.float32)
        f[:, :, 5] = fill
        dd = dataclasses.replace(d, frames=f, meta={**d.meta, "mask": mask})
        r = reconstruct_rnf(dd, RNFOptions(epochs=2, seed=1))
        runs.append(r)
    assert runs[0].extras["data_term"] == runs[1].extras["data_term"]
    np.testing.assert_array_equal(runs[0].object, runs[1].object)
