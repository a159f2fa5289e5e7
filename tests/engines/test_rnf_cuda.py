"""The RNF path on CUDA (marked ``gpu``; skipped without a device; run by bench/gpu.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.fields import ResidualField
from ptytasks.fields.complex_layers import ComplexMLP
from ptytasks.fields.fused_mlp import native_bfloat16
from ptytasks.metrics.errors import complex_error
from ptytasks.simulate.datasets import simulate

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("kernels", ["eager", "compiled"])
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_fused_mlp_on_cuda_matches_cpu(precision, kernels):
    """One chunk on the GPU, 2048-point chunks on the CPU: the same function; on the GPU
    also with the element-wise kernels compiled (Triton)."""
    mlp = ComplexMLP(16, 1, seed=2, out_init_scale=1.0, hidden_precision=precision)
    feats = torch.rand(16, 5000) * 0.2 - 0.1
    ys = []
    for dev in ("cpu", "cuda"):
        m = ComplexMLP(16, 1, seed=2, out_init_scale=1.0, hidden_precision=precision,
                       kernels=kernels if dev == "cuda" else "eager").to(dev)
        m.load_state_dict(mlp.state_dict())
        x = feats.to(dev).requires_grad_(True)
        y = m.forward_split(x, 2048 if dev == "cpu" else None)
        g = torch.autograd.grad(y.square().sum(), [x, *m.parameters()])
        ys.append((y.cpu(), [t.cpu() for t in g]))
    tol = 1e-4 if precision == "float32" else 0.05
    rel = lambda a, b: float((a - b).norm() / b.norm().clamp(min=1e-30))  # noqa: E731
    assert rel(ys[1][0], ys[0][0]) < tol
    assert rel(torch.cat([t.flatten() for t in ys[1][1]]),
               torch.cat([t.flatten() for t in ys[0][1]])) < tol


def test_auto_precision_is_bfloat16_on_a_gpu_that_has_it():
    assert native_bfloat16(torch.device("cuda")) == torch.cuda.is_bf16_supported()


def test_field_on_cuda_matches_cpu():
    prior = torch.ones(96, 96, dtype=torch.complex64)
    f = ResidualField((96, 96), prior, mlp={"hidden_precision": "float32",
                                             "out_init_scale": 1.0})
    g = ResidualField((96, 96), prior, mlp={"hidden_precision": "float32",
                                             "out_init_scale": 1.0}).cuda()
    g.load_state_dict(f.state_dict())
    torch.testing.assert_close(g().cpu(), f(), rtol=1e-4, atol=1e-5)


def test_rnf_reconstructs_on_cuda_as_on_cpu():
    data = simulate("farfield", frame_size=48, n_positions=49, seed=0, dose=1e6)
    probe = data.ground_truth["probe"]
    truth = data.ground_truth["object"]
    errs = {}
    for dev in ("cpu", "cuda"):
        res = reconstruct_rnf(data, RNFOptions(epochs=20, device=dev), probe_prior=probe)
        assert np.isfinite(res.loss_history).all()
        errs[dev] = complex_error(res.object, truth)
    # different kernels and chunking: the same quality, not the same bits
    assert errs["cuda"] < 1.25 * errs["cpu"] + 0.01


def test_cuda_graph_replays_the_same_steps():
    """Steps replayed from a CUDA graph make the same updates as eager steps."""
    from dataclasses import replace

    from ptytasks.metrics.errors import complex_error as err

    data = simulate("farfield", frame_size=48, n_positions=49, seed=0, dose=1e6)
    probe = data.ground_truth["probe"]
    o = RNFOptions(epochs=6, device="cuda", eval_region="full", kernels="eager",
                   hidden_precision="float32", batch_size=16)  # fixed: "auto" would take 9
    a = reconstruct_rnf(data, o, probe_prior=probe)
    b = reconstruct_rnf(data, replace(o, cuda_graphs=False), probe_prior=probe)
    # 49 frames: three full batches of 16 and one of 1 per epoch; two warm-up steps
    assert a.extras["cuda_graph"] == {"replays": 6 * 3 - 2, "blocker": None}
    assert b.extras["cuda_graph"]["replays"] == 0
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-4)
    assert err(a.object, b.object) < 1e-3


@pytest.mark.parametrize("modality", ["fourier", "coded"])
def test_cuda_graph_captures_fourier_and_coded_steps(modality):
    """No host read inside their steps (the pupil windows checked at setup, the coded
    transfer functions cached by parameter version): the steps are captured and replayed."""
    data = {"fourier": lambda: simulate("fourier", image_size=24, upsample=2, na=0.1,
                                        na_illum=0.15, seed=0),
            "coded": lambda: simulate("coded", frame_size=24, n_positions=12, overlap=0.9,
                                      seed=0)}[modality]()
    o = RNFOptions(epochs=4, device="cuda", eval_region="full", batch_size=4)
    r = reconstruct_rnf(data, o)
    assert r.extras["cuda_graph"]["blocker"] is None
    assert r.extras["cuda_graph"]["replays"] > 0
