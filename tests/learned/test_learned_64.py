"""The ``learned`` engine on the simulator's default 64 x 64 frames (issue #22, 8c).

The quality floor: on held-out seeds the engine's object must beat the uniform object (the
pipeline's default object prior, what the engine "returns" when it has learned nothing) by
a clear margin, and stay within a stated factor of the 32 x 32 network on 32 x 32 frames of
the same seed. The floors were set on seeds 11-13 (numbers below and in
``docs/learned.md``); seed 14 is scored and was not looked at while setting them. Then the
user's first try, ``ptyflow simulate -m farfield -o x.cxi && ptyflow run x.cxi -o r.zarr
--engine learned``: through the pipeline stages (fast) and as the CLI subprocess (slow).
"""

from __future__ import annotations

import numpy as np
import pytest

from ptytasks.learned.inversion import default_weights, resolve_weights
from tests.cli_runner import ptyflow_cli

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not default_weights("ppn").with_name("ppn_default_64.pt").is_file(),
                       reason="no committed 64 x 64 weights"),  # fmt: skip
]

#: Seeds 11-13 (64-position raster, 65 % overlap, dead leaves, 1e6 photons, known probe):
#: learned error / uniform error 0.760, 0.740, 0.748 -> floor 0.85 (the worst plus ~0.09
#: for the scored seed; the uniform object scores 1); learned 64 error / learned 32 error
#: 1.140, 1.130, 1.326 -> factor 1.5.
RATIO_FLOOR = 0.85
FACTOR_32 = 1.5
SCORED_SEED = 14


def _scan(frame: int, seed: int):
    from ptytasks.simulate import simulate

    return simulate("farfield", frame_size=frame, n_positions=64, overlap=0.65, scan="raster",
                    object_kind="dead_leaves", dose=1e6, known_probe=True,
                    seed=seed)  # fmt: skip


def _errors(data, obj) -> tuple[float, float]:
    """Complex error of ``obj`` and of the uniform object on the illuminated region."""
    from bench.bench_learned import region
    from ptytasks.metrics.errors import complex_error

    w, truth = region(data), data.ground_truth["object"]
    return (complex_error(obj, truth, w),
            complex_error(np.ones(truth.shape, np.complex64), truth, w))  # fmt: skip


def test_quality_floor_at_64_on_a_held_out_seed():
    from ptytasks.engines.registry import run_engine

    d64, d32 = _scan(64, SCORED_SEED), _scan(32, SCORED_SEED)
    r64 = run_engine("learned", d64, {}, probe_prior=d64.probe)
    r32 = run_engine("learned", d32, {}, probe_prior=d32.probe)
    assert r64.extras["weights"].endswith("ppn_default_64.pt")  # its own set, not resampled
    assert r64.extras["frame_mapping"]["mode"] == "none"
    assert r64.object.shape == tuple(d64.object_shape)
    e64, u64 = _errors(d64, r64.object)
    e32, _ = _errors(d32, r32.object)
    print(f"seed {SCORED_SEED}: 64 x 64 error {e64:.3f}, uniform {u64:.3f} (ratio "
          f"{e64 / u64:.3f}, floor {RATIO_FLOOR}); 32 x 32 error {e32:.3f} (64/32 "
          f"{e64 / e32:.3f}, factor {FACTOR_32})")
    assert e64 < RATIO_FLOOR * u64
    assert e64 < FACTOR_32 * e32


def test_default_simulation_through_the_pipeline_stages(tmp_path):
    # what `ptyflow run x.cxi --engine learned` runs, without the Prefect server: the
    # simulator's defaults (64 x 64 frames, no known probe: the mean-pattern prior)
    from flows import stages
    from flows.params import (
        CalibrationParams,
        EngineParams,
        IngestParams,
        SubsampleParams,
        TilingParams,
    )
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    data = simulate("farfield")
    assert data.frame_shape == (64, 64) and data.probe is None
    cxi = tmp_path / "x.cxi"
    write_cxi(cxi, data)
    store = str(tmp_path / "r.zarr")
    stages.ingest(str(cxi), store, IngestParams())
    stages.subsample(store, SubsampleParams())
    cal = CalibrationParams()
    stages.calibrate(store, cal)
    tiles = stages.plan(store, TilingParams())
    for tile in tiles:
        assert stages.reconstruct_tile(store, tile, EngineParams(engine="learned"),
                                       cal)["skipped"] is False  # fmt: skip
    assert stages.stitch(store, tiles)["n_tiles"] == len(tiles)
    assert resolve_weights(None, "ppn", 64).name == "ppn_default_64.pt"
    # and on that data (the held-out camera picture, noise-free, the mean-pattern probe)
    # the engine is clearly better than the uniform object: measured 0.219 against 0.322
    from ptytasks.calibration import probe_prior
    from ptytasks.engines.registry import run_engine

    res = run_engine("learned", data, {}, probe_prior=probe_prior(data))
    err, uniform = _errors(data, res.object)
    assert err < 0.8 * uniform, (err, uniform)


@pytest.mark.slow  # 35 s (a Prefect server); the stages run in-process in the default run
@pytest.mark.timeout(900)
def test_cli_simulate_then_run_learned(tmp_path):
    # the command line, as a user types it (subprocesses, a temporary Prefect
    # server): 27 s on the 2-core VM beside one busy core, 2 min when every core is busy
    import csv

    from storage.store import RunStore

    ptyflow = ptyflow_cli(tmp_path, timeout=600)

    sim = ptyflow("simulate", "-m", "farfield", "-o", "x.cxi")
    assert sim.returncode == 0, sim.stdout + sim.stderr
    run = ptyflow("run", "x.cxi", "-o", "r.zarr", "--engine", "learned", "--cluster", "none")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    store = RunStore(tmp_path / "r.zarr", "r")
    assert store.is_complete("metrics")
    assert store.root["reconstruct/t0000"].attrs["engine"] == "learned"
    rows = dict(csv.reader(open(tmp_path / "r_metrics.csv")))
    assert np.isfinite(float(rows["truth_complex_error"]))
