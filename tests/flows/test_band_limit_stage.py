"""The band both half-data halves measured, as the evaluation stage reads it from a run
store (Fourier ptychography: the synthetic aperture, finer object grid than it)."""

from __future__ import annotations

import pytest

from flows import stages
from flows.params import PipelineParams
from ptytasks.evaluation import half_data_band_limit
from ptytasks.modalities import modality_of
from ptytasks.simulate import simulate
from storage.cxi import write_cxi
from storage.store import RunStore


def test_fourier_band_limit_is_the_lower_of_the_halves(tmp_path):
    data = simulate("fourier", image_size=32, seed=0)
    p = PipelineParams(input=str(write_cxi(tmp_path / "fp.cxi", data)),
                       store=str(tmp_path / "r.zarr"))  # fmt: skip
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    store = RunStore(p.store, "r")
    mod = modality_of(data)
    halves = [mod.band_limit(data.subset(h)) for h in mod.half_split(data)]
    whole = mod.band_limit(data)
    assert 0 < min(halves) <= whole < 0.5  # the simulator's synthetic NA 0.4 < Nyquist
    # a checkerboard of the LED board keeps LEDs all round the centre in each half (in the
    # simulator's ring order, alternate frames gave 0.067 per half against 0.242)
    assert min(halves) > 0.8 * whole
    assert half_data_band_limit(store.read_raw(lazy=True)) == pytest.approx(min(halves))


def test_scanning_data_has_no_band_limit(tmp_path):
    data = simulate("farfield", frame_size=32, n_positions=16, seed=0)
    p = PipelineParams(input=str(write_cxi(tmp_path / "ff.cxi", data)),
                       store=str(tmp_path / "r.zarr"))  # fmt: skip
    stages.ingest(p.input, p.store, p.ingest)
    stages.subsample(p.store, p.subsample)
    assert half_data_band_limit(RunStore(p.store, "r").read_raw(lazy=True)) is None
