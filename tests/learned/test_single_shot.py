"""Fast tests of the single-shot inversion pieces: data stream, PoCA, networks, engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ptytasks.learned.inversion import (
    PPN,
    InversionConfig,
    PtychoNN,
    build,
    load_inversion,
    save_inversion,
)
from ptytasks.learned.polar_attention import PolarAttention, polar_coordinates, polar_weights
from ptytasks.learned.single_shot_data import (
    Geometry,
    NoiseModel,
    SingleShotStream,
    StreamConfig,
    reference_phase,
    zone_plate,
)

GEO = Geometry(frame_size=32)
REPO = Path(__file__).resolve().parents[2]


def _stream(seed: int, batch: int = 4) -> SingleShotStream:
    return SingleShotStream(StreamConfig(batch=batch, canvas=64, pool=2, refresh=1,
                                         kinds=("blobs",), seed=seed, geometry=GEO))


# --- data -----------------------------------------------------------------------------------
def test_stream_shapes_ranges_and_seeding():
    a, b, c = _stream(3), _stream(3), _stream(4)
    for _ in range(2):  # includes a canvas refresh
        xa, amp, ph = a.sample()
        xb, _, _ = b.sample()
        xc, _, _ = c.sample()
    assert xa.shape == (4, 1, 32, 32) and amp.shape == ph.shape == (4, 16, 16)
    assert xa.dtype == torch.float32 and torch.isfinite(xa).all() and xa.min() >= 0
    assert torch.equal(xa, xb)  # same seed, same batches
    assert not torch.equal(xa, xc)
    lo, hi = NoiseModel().amplitude_range
    assert amp.min() >= lo - 1e-5 and amp.max() <= hi + 1e-5


def test_predicted_patch_holds_the_probe_footprint():
    # M = N/2 holds a footprint of up to N/2; a window-filling probe predicts the whole window
    assert Geometry(32).out == 16 and Geometry(32, probe_diameter_px=16).out == 16
    assert Geometry(32, probe_diameter_px=28.8).out == 32
    assert Geometry(32, probe_diameter_px=28.8, out_size=16).out == 16
    assert Geometry(64, probe_diameter_px=40).crop == slice(0, 64)


def test_single_material_targets_keep_absolute_coupled_phase():
    # One image sets both (thicker is darker and shifts more); the frame's amplitude fixes
    # the phase, so targets are not referenced to their mean phase
    nz = NoiseModel(single_material=True, amplitude_range=(1.0, 0.8))
    cfg = StreamConfig(batch=6, canvas=64, pool=2, refresh=1, kinds=("layout",), seed=1,
                       geometry=GEO, noise=nz)  # fmt: skip
    _, amp, ph = SingleShotStream(cfg).sample()
    t = ph / (math.pi / 2)
    assert t.min() >= -1e-6 and t.max() <= 1 + 1e-6 and (t < 1e-6).any()  # vacuum at 0 rad
    torch.testing.assert_close(amp, 1.0 - 0.2 * t, atol=1e-5, rtol=0)
    _, amp_i, ph_i = _stream(1).sample()  # independent drawings: referenced phases
    assert not torch.allclose(amp_i, 0.8 + 0.2 * ph_i / (math.pi / 2), atol=1e-2)


def test_reference_phase_sets_weighted_mean_phase():
    g = torch.Generator().manual_seed(0)
    z = torch.polar(torch.rand(3, 16, 16, generator=g) + 0.5, torch.rand(3, 16, 16, generator=g))
    w = torch.rand(16, 16, generator=g).to(torch.complex64)
    out = reference_phase(z, w, NoiseModel())
    mean = (out * w.abs() ** 2).sum((-2, -1))
    np.testing.assert_allclose(torch.angle(mean).numpy(), math.pi / 4, atol=1e-5)
    np.testing.assert_allclose(out.abs().numpy(), z.abs().numpy(), rtol=1e-6)


def test_zone_plate_matches_simulator_probe():
    from ptytasks.simulate import simulate

    data = simulate("farfield", frame_size=32, n_positions=4, seed=0)
    p, q = data.ground_truth["probe"], zone_plate(GEO, 1.0)
    assert abs(np.vdot(p, q)) / np.linalg.norm(p) / np.linalg.norm(q) > 0.9999
    np.testing.assert_allclose(np.sum(np.abs(q) ** 2), 1.0, rtol=1e-5)


# --- polar attention --------------------------------------------------------------------------
def test_polar_weights_properties():
    rho, theta = polar_coordinates(6, 6, torch.zeros(2))
    r, t = polar_weights(rho, theta)
    assert r.shape == t.shape == (36, 36)
    torch.testing.assert_close(r, r.T)
    torch.testing.assert_close(torch.diagonal(r), torch.ones(36))
    assert rho.min() >= 0 and rho.max() <= 1
    # a 90-degree rotation about the centre keeps every radius (same ring -> R = 1)
    i, j = 0 * 6 + 1, 1 * 6 + 5  # token (0, 1) and its rotation (1, 5)
    assert abs(float(rho[i] - rho[j])) < 1e-6 and abs(float(r[i, j]) - 1) < 1e-6
    # angular continuity across the -pi/+pi cut: two tokens either side of the cut
    left_up, left_down = 2 * 6 + 0, 3 * 6 + 0
    assert float(t[left_up, left_down]) > 0.9


def test_poca_reduces_to_softmax_attention_and_modulates_logits():
    torch.manual_seed(0)
    att = PolarAttention(8, 2, (4, 4), alpha=0.0, beta=0.0)
    x = torch.randn(2, 16, 8)
    q, k, v = att.qkv(x).reshape(2, 16, 3, 2, 4).permute(2, 0, 3, 1, 4)
    ref = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1) @ v
    ref = att.proj(ref.transpose(1, 2).reshape(2, 16, 8))
    torch.testing.assert_close(att(x), ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        att.alpha.fill_(0.7)
        att.beta.fill_(-0.3)
    logits, _ = att.logits(x)
    rho, theta = polar_coordinates(4, 4, att.centre)
    r, t = polar_weights(rho, theta)
    torch.testing.assert_close(logits, (q @ k.transpose(-2, -1) / 2.0) * (1 + 0.7 * r - 0.3 * t),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_poca_centre_is_learnable():
    torch.manual_seed(0)
    att = PolarAttention(8, 2, (4, 4))
    att(torch.randn(2, 16, 8)).square().sum().backward()
    assert att.centre.grad is not None and att.centre.grad.abs().sum() > 0
    assert att.alpha.grad is not None and att.beta.grad is not None


# --- networks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ppn", "ptychonn"])
def test_networks_shapes_constraints_and_determinism(kind):
    cfg = InversionConfig(model=kind, geometry=GEO, dim=16)
    torch.manual_seed(1)
    net = build(cfg).eval()
    torch.manual_seed(1)
    twin = build(cfg).eval()
    assert isinstance(net, PPN if kind == "ppn" else PtychoNN)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        a, p = net(x)
        a2, p2 = twin(x)
        big_a, big_p = net(1e4 * (x - 0.5))
    assert a.shape == p.shape == (3, 16, 16)
    torch.testing.assert_close(a, a2)
    torch.testing.assert_close(p, p2)
    for amp, ph in ((a, p), (big_a, big_p)):
        assert amp.min() >= 0 and amp.max() <= cfg.amp_max
        assert ph.abs().max() <= math.pi
    # the heads start near the middle of the training ranges
    assert abs(float(a.mean()) - 0.9) < 0.1 and abs(float(p.mean()) - math.pi / 4) < 0.3


def test_save_load_round_trip(tmp_path):
    cfg = InversionConfig(model="ppn", geometry=GEO, dim=16)
    net = build(cfg).eval()
    path = save_inversion(net, tmp_path / "w.pt", {"seed": 0})
    back = load_inversion(path)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1], back(x)[1])
    assert back.meta == {"seed": 0} and back.config.geometry.frame_size == 32
    # a file written before the local stem existed (no "local_stem" key) loads stem-less
    old = build(InversionConfig(model="ppn", geometry=GEO, dim=16, patch=8, local_stem=0)).eval()
    blob = torch.load(save_inversion(old, tmp_path / "old.pt"), weights_only=True)
    del blob["config"]["local_stem"]
    torch.save(blob, tmp_path / "old.pt")
    back = load_inversion(tmp_path / "old.pt")
    assert back.config.local_stem == 0
    with torch.no_grad():
        torch.testing.assert_close(old(x)[1], back(x)[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["ppn", "ptychonn"])
def test_fast_inference_equals_the_trained_network(kind):
    """Transposed-conv rewriting and BatchNorm folding change no output (eval mode)."""
    import copy

    from ptytasks.learned.inversion import fast_inference

    torch.manual_seed(2)
    net = build(InversionConfig(model=kind, geometry=GEO, dim=16, local_stem=4))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-trivial statistics and affine terms, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    net.eval()
    fast = fast_inference(copy.deepcopy(net))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert n_bn == 0
    x = torch.rand(4, 1, 32, 32, generator=g)
    with torch.no_grad():
        for ref, out in zip(net(x), fast(x), strict=True):
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_losses():
    from ptytasks.learned.train_inversion import loss_fn, ssim_torch

    a = torch.rand(2, 16, 16)
    assert abs(float(ssim_torch(a, a)) - 1) < 1e-6
    nz = NoiseModel()
    amp, ph = 0.9 + 0.05 * a, 0.5 + a
    assert float(loss_fn((amp, ph), (amp, ph), nz, "mse")) == 0
    assert abs(float(loss_fn((amp, ph), (amp, ph), nz, "mse_nssim"))) < 1e-6
    assert float(loss_fn((amp, ph), (amp + 0.01, ph), nz, "mse_nssim", 0.9)) > 0


# --- engine -----------------------------------------------------------------------------------
def test_stitch_patches_recovers_object_from_phase_shifted_crops():
    from ptytasks.engines.learned import stitch_patches

    rng = np.random.default_rng(0)
    obj = (0.9 + 0.1 * rng.random((40, 40))) * np.exp(1j * rng.random((40, 40)))
    corners = np.array([[y, x] for y in range(0, 25, 6) for x in range(0, 25, 6)])
    crops = np.stack([obj[y:y + 16, x:x + 16] for y, x in corners])
    offsets = np.exp(1j * rng.uniform(-1, 1, len(crops)))[:, None, None]
    w = torch.ones(16, 16)
    out, weight = stitch_patches(torch.from_numpy(crops * offsets), corners, w, (40, 40),
                                 iterations=20)  # fmt: skip
    seen = weight > 0
    c = np.vdot(out[seen], obj[seen]) / np.vdot(out[seen], out[seen])
    err = np.linalg.norm(c * out[seen] - obj[seen]) / np.linalg.norm(obj[seen])
    assert err < 5e-3  # float32 sums; unaligned offsets give ~0.5
    assert np.all(out[~seen] == 1)


def test_stitch_patches_aligns_a_large_scan_with_default_sweeps():
    # 400 patches with random constant phases: four simultaneous sweeps alone left a
    # complex error of ~0.1 here; the growing pass makes the alignment exact
    from ptytasks.engines.learned import stitch_patches

    rng = np.random.default_rng(1)
    obj = (0.8 + 0.2 * rng.random((149, 149))) * np.exp(1j * 1.5 * rng.random((149, 149)))
    corners = np.array([[y, x] for y in range(0, 134, 7) for x in range(0, 134, 7)])
    crops = np.stack([obj[y:y + 16, x:x + 16] for y, x in corners])
    offsets = np.exp(1j * rng.uniform(-np.pi, np.pi, len(crops)))[:, None, None]
    yy, xx = np.mgrid[:16, :16] - 7.5
    w = torch.from_numpy(np.exp(-(yy**2 + xx**2) / 40.0))  # a probe-like weight
    out, weight = stitch_patches(torch.from_numpy(crops * offsets), corners, w, (149, 149))
    seen = weight > 0
    c = np.vdot(out[seen], obj[seen]) / np.vdot(out[seen], out[seen])
    err = np.linalg.norm(c * out[seen] - obj[seen]) / np.linalg.norm(obj[seen])
    assert err < 1e-3


def test_learned_engine_round_trip_through_registry_and_prior(tmp_path):
    from ptytasks.calibration import object_prior
    from ptytasks.engines.learned import LearnedOptions, reconstruct_learned
    from ptytasks.engines.registry import ENGINES, run_engine
    from ptytasks.simulate import simulate

    data = simulate("farfield", frame_size=32, n_positions=9, overlap=0.5, known_probe=True,
                    dose=1e5, seed=2)  # fmt: skip
    cfg = InversionConfig(model="ppn", geometry=GEO, dim=16)
    weights = save_inversion(build(cfg).eval(), tmp_path / "tiny.pt")
    assert "learned" in ENGINES
    res = run_engine("learned", data, {"weights": str(weights), "epochs": 3, "seed": 0})
    assert res.engine == "learned" and res.object.shape == tuple(data.object_shape)
    assert res.object.dtype == np.complex64 and np.isfinite(res.object).all()
    assert res.timings["total"] > 0 and res.n_epochs == 0
    np.testing.assert_allclose(res.extras["flux"], np.sum(np.abs(data.probe) ** 2), rtol=1e-5)
    direct = reconstruct_learned(data, LearnedOptions(weights=str(weights)))
    np.testing.assert_array_equal(direct.object, res.object)
    other = simulate("farfield", frame_size=48, n_positions=4, seed=0)  # resampled (#22)
    res48 = run_engine("learned", other, {"weights": str(weights)})
    assert res48.object.shape == tuple(other.object_shape)
    assert res48.extras["frame_mapping"]["mode"] == "crop"
    prior = object_prior(data, data.probe, "learned")  # committed default weights
    assert prior.shape == tuple(data.object_shape) and np.isfinite(prior).all()
    mine = object_prior(data, data.probe, "learned", learned_weights=str(weights))
    np.testing.assert_array_equal(mine, res.object)
    assert res.extras["patch_coverage"] == 1.0


def test_weight_presets_and_absolute_phase_networks_skip_alignment(tmp_path):
    from ptytasks.engines.learned import reconstruct_learned
    from ptytasks.learned.inversion import PRESETS, default_weights, resolve_weights
    from ptytasks.simulate import simulate

    assert resolve_weights(None) == default_weights("ppn") == resolve_weights("default")
    assert resolve_weights("layout", "ptychonn").name == "ptychonn_layout.pt"
    assert resolve_weights(tmp_path / "w.pt") == tmp_path / "w.pt"
    with pytest.raises(ValueError, match="preset"):
        default_weights("ppn", "nonsense")
    for preset in PRESETS:  # every committed set loads, for both networks
        for m in ("ppn", "ptychonn"):
            assert load_inversion(preset, model=m).config.model == m
    lay = load_inversion("layout").config
    assert lay.noise.single_material and lay.geometry.diameter == pytest.approx(28.8)
    assert lay.geometry.out == 32
    # a network of absolute phases is stitched without alignment (None = auto)
    geo = Geometry(32, probe_diameter_px=28.8)
    nz = NoiseModel(single_material=True, amplitude_range=(1.0, 0.8))
    net = build(InversionConfig(model="ptychonn", geometry=geo, noise=nz, dim=8)).eval()
    data = simulate("farfield", frame_size=32, n_positions=9, overlap=0.3, known_probe=True,
                    probe_diameter_px=28.8, object_kind="layout", seed=2)  # fmt: skip
    from ptytasks.engines.learned import LearnedOptions

    auto = reconstruct_learned(data, LearnedOptions(), model=net).object
    off = reconstruct_learned(data, LearnedOptions(align_phase=False), model=net).object
    on = reconstruct_learned(data, LearnedOptions(align_phase=True), model=net).object
    np.testing.assert_array_equal(auto, off)
    assert not np.array_equal(auto, on)


def test_learned_engine_warns_when_patches_leave_gaps():
    from ptytasks.engines.learned import _patch_coverage, stitch_patches

    probe = np.ones((32, 32), np.complex64)  # a window-filling probe, 16 x 16 patches
    pos = np.array([[0, 0], [0, 24], [24, 0], [24, 24]], np.float64)  # step 24 > 16
    patches = torch.ones(4, 16, 16, dtype=torch.complex64)
    _, den = stitch_patches(patches, pos + 8, torch.ones(16, 16), (56, 56), align_phase=False)
    with pytest.warns(UserWarning, match="cover"):
        share = _patch_coverage(den, probe, pos, (56, 56))
    assert share == pytest.approx(4 * 256 / 56**2)  # the patches hold a third of the field


def test_pipeline_params_accept_learned():
    from flows.params import CalibrationParams, EngineParams

    s = EngineParams(engine="learned", batch_size=64).settings()
    assert s["batch_size"] == 64
    with pytest.raises(ValueError, match="has no setting alpha"):  # was dropped silently
        EngineParams(engine="learned", alpha=0.5)
    assert CalibrationParams(object="learned").object == "learned"
    from flows.step_keys import calibration_key as _calibration_key

    # the learned prior's weights key a run only when the prior is learned, so stores
    # written before the field existed keep their fingerprints
    assert "learned_weights" not in _calibration_key(CalibrationParams())
    assert _calibration_key(CalibrationParams(object="learned"))["learned_weights"] == "default"


def _tiny(cfg):
    import dataclasses

    return dataclasses.replace(cfg, canvas=48, bn_batches=1, kinds=("blobs",))


def test_training_is_deterministic():
    from ptytasks.learned.train_inversion import TrainConfig, train

    cfg = _tiny(TrainConfig(model="ppn", steps=2, batch=2, epoch_steps=1, dim=8, n_val=2,
                            seed=3))  # fmt: skip
    a, rep = train(cfg, log=lambda *_: None)
    b, _ = train(cfg, log=lambda *_: None)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert len(rep["history"]) == 2 and set(rep["validation"]) >= {"amp_ssim", "phase_psnr"}


def test_train_learned_cli_writes_weights_and_record(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    import ptytasks.learned.train_inversion as T
    from flows.cli import app

    real = T.run
    monkeypatch.setattr(T, "run", lambda cfg, *a, **k: real(_tiny(cfg), *a, **k))
    out = tmp_path / "tiny.pt"
    r = CliRunner().invoke(app, ["train-learned", "--model", "ptychonn", "--out", str(out),
                                 "--steps", "2", "--batch", "2", "--epoch-steps", "1",
                                 "--frame-size", "32", "--dim", "8", "--n-val", "4",
                                 "--probe-diameter", "20"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["config"]["model"] == "ptychonn" and rec["config"]["steps"] == 2
    net = load_inversion(out)
    assert net.config.model == "ptychonn" and net.config.geometry.probe_diameter_px == 20
    assert net.config.geometry.out == 32  # a 20 px footprint does not fit the 16 px centre
    bad = CliRunner().invoke(app, ["train-learned", "--out", str(out), "--objects", "lego"])
    assert bad.exit_code == 2 and "lego" in bad.output
    out2 = tmp_path / "tiny_layout.pt"
    r = CliRunner().invoke(app, ["train-learned", "--out", str(out2), "--steps", "1",
                                 "--epoch-steps", "1", "--dim", "8", "--n-val", "2",
                                 "--objects", "layout", "--single-material"])  # fmt: skip
    assert r.exit_code == 0, r.output
    nz = load_inversion(out2).config.noise
    assert nz.single_material and tuple(nz.amplitude_range) == (1.0, 0.8)


def test_learned_engine_and_prior_through_pipeline_stages(tmp_path):
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

    cxi = tmp_path / "scan.cxi"
    write_cxi(cxi, simulate("farfield", frame_size=32, n_positions=16, overlap=0.6, dose=1e6,
                            seed=5))  # fmt: skip
    store = str(tmp_path / "run.zarr")
    stages.ingest(str(cxi), store, IngestParams())
    stages.subsample(store, SubsampleParams())
    cal = CalibrationParams(object="learned")
    stages.calibrate(store, cal)
    tiles = stages.plan(store, TilingParams())
    for engine in (EngineParams(engine="learned"), EngineParams(engine="epie", epochs=2)):
        out = stages.reconstruct_tile(store, tiles[0], engine, cal)
        assert out["skipped"] is False
    assert stages.stitch(store, tiles)["n_tiles"] == 1


def test_layout_recipe_runs_rnf_from_the_layout_network(tmp_path):
    # deployments/configs/learned-layout.yaml with the simulate command in its header
    from typer.testing import CliRunner

    from flows import stages
    from flows.cli import app
    from flows.params import PipelineParams
    from ptytasks.calibration import object_prior
    from storage.cxi import read_cxi

    cxi = tmp_path / "lay.cxi"
    r = CliRunner().invoke(app, [
        "simulate", "-m", "farfield", "--frame-size", "32", "--object", "layout",
        "--probe-diameter", "28.8", "--amplitude", "1", "0.8", "--overlap", "0.3",
        "--n-positions", "16", "--scan", "raster", "--dose", "1e6", "--known-probe",
        "-o", str(cxi)])  # fmt: skip
    assert r.exit_code == 0, r.output
    data = read_cxi(cxi)
    assert data.probe is not None and data.meta["probe_diameter_px"] == pytest.approx(28.8)
    truth = data.ground_truth["object"]
    assert np.abs(truth).max() <= 1 + 1e-6 and np.abs(truth).min() >= 0.8 - 1e-6
    p = PipelineParams.from_yaml(REPO / "deployments" / "configs" / "learned-layout.yaml",
                                 input=str(cxi), store=str(tmp_path / "lay.zarr"))  # fmt: skip
    assert p.calibration.learned_weights == "layout" and not p.engine.learn_probe
    store = p.store
    stages.ingest(str(cxi), store, p.ingest)
    stages.subsample(store, p.subsample)
    stages.calibrate(store, p.calibration)
    tiles = stages.plan(store, p.tiling)
    engine = p.engine.model_copy(update={"epochs": 1})
    assert stages.reconstruct_tile(store, tiles[0], engine, p.calibration)["skipped"] is False
    prior = object_prior(data, data.probe, "learned", learned_weights="layout")
    default = object_prior(data, data.probe, "learned")
    assert not np.allclose(prior, default)  # the layout network, not the default one
