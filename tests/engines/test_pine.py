"""PINE: ePIE sweeps + the HSD denoising step with a learned nonexpansive-residual denoiser.

Small problems only; the full comparison (300/150 epochs, the step-size grid, the whole
Siemens star) is ``bench/bench_pine.py``. FRC against the truth is taken at half the
maximum frequency (0.25 cycles/pixel) over the truly illuminated region, after aligning
the reconstruction (as the benchmark does).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ptytasks.engines.options import PIEOptions
from ptytasks.engines.pie import reconstruct_pie
from ptytasks.engines.pine import PINEOptions, reconstruct_pine
from ptytasks.learned import DEFAULT_WEIGHTS
from ptytasks.learned.dncnn import DnCNN, DnCNNConfig, residual_complex
from ptytasks.metrics import align, frc, taper_mask
from ptytasks.simulate import simulate, simulated_zone_plate

needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no default weights")


@pytest.fixture(scope="module")
def small():
    return simulate("farfield", seed=1, n_positions=30, frame_size=32, dose=1e5)


def toy_denoiser(seed: int = 0) -> DnCNN:
    torch.manual_seed(seed)
    return DnCNN(DnCNNConfig(depth=3, features=4)).eval()


def start_probe(data, factor: float = 1.2) -> np.ndarray:
    """The simulator's zone plate with a 20 % wrong defocus (as the blind PIE tests)."""
    gt = data.ground_truth
    return simulated_zone_plate(data.frame_shape, gt["pixel_size"], gt["wavelength"],
                                data.meta["probe_diameter_px"], factor).numpy()


def frc_half_nyquist(obj: np.ndarray, data) -> float:
    gt = data.ground_truth
    p2 = np.abs(gt["probe"]) ** 2
    w = np.zeros(gt["object"].shape)
    for y, x in np.round(gt["positions_px"]).astype(int):
        w[y:y + p2.shape[0], x:x + p2.shape[1]] += p2
    mask = w >= 0.01 * w.max()
    x, _ = align(obj, gt["object"], mask)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    c = frc(x[box], gt["object"][box], window=mask[box] * taper_mask(mask[box], 8.0))
    return float(np.interp(0.25, c.freq, np.nan_to_num(c.frc)))


# --- the algorithm ---------------------------------------------------------------------------
def test_rho_zero_is_epie_bit_for_bit(small):
    kw = dict(iterations=4, alpha=0.7, beta=0.3, seed=3)
    ref = reconstruct_pie(small, PIEOptions(variant="epie", **kw))
    res = reconstruct_pine(small, PINEOptions(rho=0.0, **kw), denoiser=toy_denoiser())
    np.testing.assert_array_equal(res.object, ref.object)
    np.testing.assert_array_equal(res.probe, ref.probe)
    assert res.loss_history == ref.loss_history
    assert res.engine == "pine" and res.extras["denoise_change"] == [0.0] * 4


def test_denoising_step_is_the_hsd_relaxation(small):
    """After each sweep: O <- (1 - rho) O + rho D(O), D = Id - R on Re and Im separately."""
    net, rho = toy_denoiser(1), 0.3
    kw = dict(alpha=0.7, beta=0.3, seed=2)
    one = reconstruct_pie(small, PIEOptions(variant="epie", iterations=1, **kw))
    res = reconstruct_pine(small, PINEOptions(iterations=1, rho=rho, **kw), denoiser=net)
    o = torch.as_tensor(one.object)
    with torch.no_grad():
        d = lambda x: net.denoise(x[None, None])[0, 0]
        expected = (1 - rho) * o + rho * torch.complex(d(o.real), d(o.imag))
    np.testing.assert_allclose(res.object, expected.numpy(), rtol=1e-5, atol=1e-6)
    r = residual_complex(net, o)
    assert res.extras["denoise_change"][0] == pytest.approx(
        rho * float(r.abs().norm() / o.abs().norm()), rel=1e-5)


def test_denoise_schedule_and_callback(small):
    seen = []
    opts = PINEOptions(iterations=6, denoise_start=2, denoise_every=2, rho=0.49)
    res = reconstruct_pine(small, opts, denoiser=toy_denoiser(),
                           callback=lambda e, i: seen.append((e, i["denoise_change"])))
    changes = res.extras["denoise_change"]
    assert [c > 0 for c in changes] == [False, False, True, False, True, False]
    assert [e for e, _ in seen] == list(range(6)) and [c for _, c in seen] == changes
    assert res.timings["denoise"] > 0 and res.options["rho"] == 0.49


def test_epoch_time_includes_the_denoising(small):
    """What a timing reads (the grid's s/epoch and equal-time columns) holds the denoiser's
    time: a denoised epoch reports at least its denoising, a plain one less."""
    import time as _time

    class Slow(DnCNN):
        def forward(self, x):
            _time.sleep(0.05)
            return super().forward(x)

    torch.manual_seed(0)
    net = Slow(DnCNNConfig(depth=3, features=4)).eval()
    seen = []
    opts = PINEOptions(iterations=4, denoise_start=2, denoise_every=2, rho=0.49)
    reconstruct_pine(small, opts, denoiser=net,
                     callback=lambda e, i: seen.append((i["time"], i["denoise_time"])))
    assert [d > 0.04 for _, d in seen] == [False, False, True, False]
    assert all(t >= d for t, d in seen)


def test_options():
    with pytest.raises(ValueError):
        PINEOptions(rho=-0.1)
    with pytest.raises(ValueError):
        PINEOptions(denoise_every=0)
    p = PINEOptions(alpha=0.5, beta=0.2, seed=4, variant="rpie", batch_size=3).pie_options()
    assert (p.alpha, p.beta, p.seed, p.variant, p.batch_size) == (0.5, 0.2, 4, "rpie", 3)
    assert PINEOptions().rho == 0.49
    with pytest.raises(FileNotFoundError):
        reconstruct_pine(simulate("farfield", seed=0, n_positions=4, frame_size=16),
                         PINEOptions(iterations=1, denoiser="/nonexistent/w.pt"))


# --- against ePIE on low-dose data -----------------------------------------------------------
@needs_weights
def test_default_denoiser_runs_and_is_recorded(small):
    res = reconstruct_pine(small, PINEOptions(iterations=2))
    assert np.isfinite(res.object).all()
    info = res.extras["denoiser"]
    assert info["config"]["depth"] >= 2 and "seed" in info["meta"]


@needs_weights
def test_pine_beats_epie_at_equal_epochs_low_dose_reduced():
    """Reduced low-dose check: the denoising step improves ePIE at an equal epoch count.

    Measured (60 positions, 48 px frames, dose 1e4, 40 epochs): PINE (0.5, 0.1) 0.827;
    ePIE (0.5, 0.1) 0.795, ePIE (0.3, 0.2) 0.815 (the paper's low-dose best for each).
    At 60 epochs PINE 0.856 vs ePIE 0.829; PINE at 30 epochs (0.809) does not yet reach
    ePIE at 60 here: the half-the-epochs claim is checked at full size (slow test, bench).
    """
    data = simulate("farfield", seed=0, dose=1e4, n_positions=60, frame_size=48)
    p0 = start_probe(data)
    n = 40
    frcs = {}
    for a, b in [(0.5, 0.1), (0.3, 0.2)]:
        res = reconstruct_pie(data, PIEOptions(variant="epie", iterations=n, alpha=a, beta=b),
                              probe_prior=p0)
        frcs[f"epie{a, b}"] = frc_half_nyquist(res.object, data)
    pine = reconstruct_pine(data, PINEOptions(iterations=n, alpha=0.5, beta=0.1), probe_prior=p0)
    frcs["pine"] = frc_half_nyquist(pine.object, data)
    print({k: round(v, 3) for k, v in frcs.items()})
    assert frcs["pine"] > max(v for k, v in frcs.items() if k != "pine")


@needs_weights
@pytest.mark.slow
def test_pine_150_beats_epie_and_rpie_300_low_dose():
    """The paper's claim at full size (about 10 minutes on one CPU core)."""
    data = simulate("farfield", seed=0, dose=1e4)
    p0 = start_probe(data)
    frcs = {}
    for name, (a, b) in {"epie": (0.3, 0.2), "rpie": (0.15, 5.0)}.items():
        res = reconstruct_pie(data, PIEOptions(variant=name, iterations=300, alpha=a, beta=b),
                              probe_prior=p0)
        frcs[name] = frc_half_nyquist(res.object, data)
    pine = reconstruct_pine(data, PINEOptions(iterations=150, alpha=0.5, beta=0.1),
                            probe_prior=p0)
    frcs["pine"] = frc_half_nyquist(pine.object, data)
    print(frcs)
    assert frcs["pine"] > max(frcs["epie"], frcs["rpie"])


# --- measured data ---------------------------------------------------------------------------
def binned_star(data):
    """The Siemens star at half resolution: the central 64x64 of each (centred) frame.

    Cropping the detector halves the numerical aperture, so object pixels double; the
    positions halve and the probe is band-limited to the kept detector area.
    """
    from ptytasks.physics.fft import fft2c, ifft2c

    n = data.frame_shape[0]
    lo = n // 2 - n // 4
    crop = slice(lo, lo + n // 2)
    spec = fft2c(torch.as_tensor(data.probe))[crop, crop]
    probe = (ifft2c(spec) * 0.5).numpy().astype(np.complex64)
    pos = data.positions_px / 2
    shape = tuple(int(np.ceil(pos[:, i].max())) + n // 2 + 4 for i in range(2))
    return dataclasses.replace(
        data, frames=np.ascontiguousarray(data.frames[:, crop, crop]), positions_px=pos,
        object_shape=shape, probe=probe, pixel_size=data.pixel_size * 2,
    )


@pytest.fixture(scope="module")
def star(data_dir):
    from storage.readers import read_any

    return binned_star(read_any(data_dir / "farfield-xray-siemens-star"
                                / "siemens-star-small.npz.bz2"))


@needs_weights
@pytest.mark.realdata
@pytest.mark.parametrize("scan, epochs", [
    ("all", 3),
    # 7 s and 13 s: in the slow run, to keep the default run under 10 minutes
    pytest.param("half", 4, marks=pytest.mark.slow),
    pytest.param("quarter", 6, marks=pytest.mark.slow),
])
def test_siemens_star_half_data_frc(star, scan, epochs):
    """ePIE, rPIE and PINE on the measured star (binned 2x), all / 1/2 / 1/4 of the scan.

    Each algorithm reconstructs the two interleaved halves of the (decimated) scan; the
    half-data FRC between them is printed (the benchmark records it at full resolution).
    """
    from ptytasks.metrics import half_split_indices
    from ptytasks.subsample import decimate_raster, keep_fraction

    keep = {"all": np.arange(star.n_frames), "half": keep_fraction(star.n_frames, 0.5),
            "quarter": decimate_raster(star.positions_px, 2)}[scan]  # fmt: skip
    sub = star.subset(keep)
    ia, ib = half_split_indices(sub.positions_px)
    out = {}
    for name in ("epie", "rpie", "pine"):
        runs = []
        for idx in (ia, ib):
            half = sub.subset(idx)
            if name == "pine":
                runs.append(reconstruct_pine(half, PINEOptions(iterations=epochs)))
            else:
                a, b = (1.0, 0.1) if name == "epie" else (0.1, 1.0)
                runs.append(reconstruct_pie(half, PIEOptions(variant=name, iterations=epochs,
                                                             alpha=a, beta=b)))
        assert all(np.isfinite(r.object).all() for r in runs)
        assert all(r.loss_history[-1] < r.loss_history[0] for r in runs)
        p2 = np.abs(runs[0].probe) ** 2
        w = np.zeros(star.object_shape)
        for y, x in np.round(sub.positions_px).astype(int):
            w[y:y + p2.shape[0], x:x + p2.shape[1]] += p2
        mask = w >= 0.1 * w.max()
        x, _ = align(runs[1].object, runs[0].object, mask)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        c = frc(x[box], runs[0].object[box], window=mask[box] * taper_mask(mask[box], 8.0))
        out[name] = c
        # The two independent halves agree at low frequency (the star's spokes).
        assert np.nanmean(c.frc[1:6]) > 0.5
    at = {k: float(np.interp(0.25, c.freq, np.nan_to_num(c.frc))) for k, c in out.items()}
    print(scan, len(keep), {k: round(v, 3) for k, v in at.items()})
    # PINE is ePIE (same steps, same epochs) plus the denoising step: the halves must agree
    # better at a quarter of the sampling frequency. Measured: all 0.220 vs 0.204, half
    # 0.034 vs 0.019, quarter 0.081 vs 0.074 (without the step PINE equals ePIE: fails).
    assert at["pine"] > at["epie"], at


# --- in the pipeline -------------------------------------------------------------------------
@needs_weights
def test_registry_engine_and_object_prior(small):
    from flows.params import PipelineParams
    from ptytasks.calibration import object_prior
    from ptytasks.engines.registry import run_engine

    params = PipelineParams.from_mapping({"input": "scan.cxi", "store": "run.zarr",
                                          "engine": {"engine": "pine", "epochs": 2,
                                                     "alpha": 0.5}})
    res = run_engine("pine", small, params.engine.settings())
    assert res.engine == "pine" and res.options["alpha"] == 0.5
    assert len(res.extras["denoise_change"]) == 2
    prior = object_prior(small, small.probe, "pine", iterations=2)
    assert prior.shape == small.object_shape and np.isfinite(prior).all()
    coded = simulate("coded", seed=0, n_positions=4, frame_size=32)
    with pytest.raises(ValueError, match="pine"):
        run_engine("pine", coded, {"epochs": 1})


def test_pine_options_take_the_variants_step_and_a_refinement_from_a_config():
    """rPIE's object step under PINE is rPIE's own (at PINE's former alpha 1 it was ePIE's);
    position_correction true from a config becomes the refinement (it crashed in the tile:
    PINE's own checks skipped PIE's)."""
    from ptytasks.engines.options import PositionCorrectionOptions
    from ptytasks.engines.pine import PINEOptions

    assert PINEOptions().pie_options().steps() == (1.0, 0.1)
    assert PINEOptions(variant="rpie").pie_options().steps() == (0.1, 0.1)
    pc = PINEOptions(position_correction=True).position_correction
    assert pc == PositionCorrectionOptions()
