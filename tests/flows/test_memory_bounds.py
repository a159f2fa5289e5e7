"""Stages whose memory must not grow with the data: calibration streams (or skips) the
frames, evaluation of a large mosaic uses a bounded pyramid level, export streams."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import ptytasks.evaluation as ev
from flows import export, stages
from flows.params import CalibrationParams, EvaluationParams
from ptytasks import calibration as cal
from ptytasks.evaluation import evaluate_mosaic
from ptytasks.lazy_frames import LazyFrames
from storage import layout as L
from storage.atomic import fingerprint
from storage.mosaic import MosaicWriter
from storage.store import RunStore
from tests.storage.conftest import make_data


def _store(tmp_path, modality="farfield", probe=True, n=12, frame=16):
    d = make_data(modality, n=n, frame=frame)
    if not probe:
        d.probe = None
    store = RunStore.create(tmp_path / "run.zarr")
    store.write_raw(d)
    store.write_subsample(np.arange(1, n))  # a subset: the lazy take path
    return store, d


def _forbid_full_reads(monkeypatch, blocks_allowed: bool):
    """Any read of all frames at once fails; block reads are allowed (or not)."""

    def full(self, *a, **k):
        raise AssertionError("all frames read into memory at once")

    def blocks(self, *a, **k):
        if not blocks_allowed:
            raise AssertionError("frames read although the probe was supplied")
        return original(self, *a, **k)

    original = LazyFrames.iter_blocks
    monkeypatch.setattr(LazyFrames, "__array__", full)
    monkeypatch.setattr(LazyFrames, "iter_blocks", blocks)
    if not blocks_allowed:
        monkeypatch.setattr(LazyFrames, "__getitem__", full)


def test_calibration_with_supplied_probe_reads_no_frame(tmp_path, monkeypatch):
    store, d = _store(tmp_path)
    _forbid_full_reads(monkeypatch, blocks_allowed=False)
    stages.calibrate(str(store.path), CalibrationParams(probe="data"))
    np.testing.assert_array_equal(store.read_array(f"{L.PRIORS}/probe"), d.probe)


@pytest.mark.parametrize(("modality", "source"), [("farfield", "mean_pattern"),
                                                  ("coded", "data")])  # fmt: skip
def test_calibration_streams_the_mean_frame(tmp_path, monkeypatch, modality, source):
    store, _ = _store(tmp_path, modality, probe=False)
    full = store.read_raw(subsample=True)  # in memory: the reference computation
    expected = cal.probe_prior(full, source)
    _forbid_full_reads(monkeypatch, blocks_allowed=True)
    stages.calibrate(str(store.path), CalibrationParams(probe=source))
    got = store.read_array(f"{L.PRIORS}/probe")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def _mosaic_store(tmp_path, shape=(256, 320)):
    """A store with truth, and a mosaic = truth x a global phase, with uneven weights."""
    rng = np.random.default_rng(3)
    d = make_data(n=4, frame=16)
    truth = np.exp(1j * rng.normal(0, 0.5, shape)) * (1 + 0.2 * rng.random(shape))
    d.ground_truth = {"object": truth.astype(np.complex64)}
    store = RunStore.create(tmp_path / "run.zarr")
    store.write_raw(d)
    store.write_subsample(np.arange(4))
    weight = rng.uniform(0.2, 1.0, shape).astype(np.float32)
    weight[:, :16] = 0  # an unlit border: outside the trusted region
    obj = (truth * np.exp(0.4j)).astype(np.complex64)
    with store.step(L.MOSAIC, fingerprint("test-mosaic"), depends_on=[L.SUBSAMPLE]) as st:
        assert not st.done
        w = MosaicWriter.create(store, shape, pixel_size=d.pixel_size, shard=(128, 128),
                                chunk=(64, 64))  # fmt: skip
        for ys, xs in w.shards():
            w.write_region(ys.start, xs.start, obj[ys, xs], weight[ys, xs])
        w.build_pyramid(min_size=32)
    return store, obj, weight, d


def test_evaluation_of_a_large_mosaic_uses_a_bounded_level(tmp_path, monkeypatch):
    store, obj, weight, d = _mosaic_store(tmp_path)
    monkeypatch.setattr(ev, "MAX_EVAL_PIXELS", 64 * 80)  # level 2 of 256 x 320
    read = []
    real = RunStore.read_array
    monkeypatch.setattr(RunStore, "read_array", lambda s, p: read.append(p) or real(s, p))
    values = stages.evaluate(str(store.path), EvaluationParams(), preview_dir=str(tmp_path))
    assert values["evaluation_level"] == 2
    assert not [p for p in read if "level_0" in p or p.endswith("truth/object")], read
    # The truth is reduced exactly as the pyramid reduces the mosaic: a perfect
    # reconstruction (up to a global phase) stays perfect on level 2 despite uneven weights.
    assert values["truth_complex_error"] < 1e-5
    assert values["truth_frc_resolution_m"] == pytest.approx(
        values["truth_frc_resolution"] ** -1 * 4 * d.pixel_size, rel=1e-6
    ) or np.isnan(values["truth_frc_resolution_m"])


def test_evaluation_of_a_small_mosaic_is_unchanged(tmp_path):
    store, obj, weight, d = _mosaic_store(tmp_path, shape=(96, 112))
    values = stages.evaluate(str(store.path), EvaluationParams(), preview_dir=str(tmp_path))
    direct = evaluate_mosaic(obj, weight, truth=d.ground_truth["object"],
                             pixel_size=d.pixel_size)  # fmt: skip
    assert values.pop("evaluation_level") == 0.0
    assert values == pytest.approx(direct, nan_ok=True)


def test_a_new_metrics_version_evaluates_again(tmp_path, monkeypatch):
    """A store evaluated under older metric definitions is not served its old values."""
    store, obj, weight, d = _mosaic_store(tmp_path, shape=(96, 112))
    calls = []
    real = ev.evaluate_mosaic

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ev, "evaluate_mosaic", counting)
    first = stages.evaluate(str(store.path), EvaluationParams())
    stages.evaluate(str(store.path), EvaluationParams())
    assert len(calls) == 1  # same definitions: the stored values are reused
    monkeypatch.setattr(ev, "METRICS_VERSION", ev.METRICS_VERSION + 1)
    again = stages.evaluate(str(store.path), EvaluationParams())
    assert len(calls) == 2 and again == pytest.approx(first, nan_ok=True)


def test_export_streams_the_mosaic(tmp_path, monkeypatch):
    store, obj, weight, d = _mosaic_store(tmp_path, shape=(512, 512))  # 2 MiB complex64
    monkeypatch.setattr(export, "_EXPORT_BLOCK_BYTES", 2**16)
    out = tmp_path / "result.npz"
    tracemalloc.start()
    try:
        export.export_npz(store.path, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < obj.nbytes / 2, f"export traced {peak} bytes for a {obj.nbytes}-byte mosaic"
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["object"], obj)
        np.testing.assert_array_equal(z["weight"], weight)
        assert z["object"].dtype == np.complex64 and z["pixel_size"] == d.pixel_size
        assert z["positions"].shape == (4, 2)
    assert not list(tmp_path.glob(".result.npz.partial-*"))
