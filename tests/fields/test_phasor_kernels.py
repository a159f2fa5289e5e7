"""The fused phasor MLP's element-wise kernels: compiled = eager, the fallback, the rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.engines.rnf_options import COMPILE_MIN_COORDS
from ptytasks.fields import phasor_kernels
from ptytasks.fields.complex_layers import ComplexMLP

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(kernels: str, precision: str, dtype=torch.float32):
    """Output and gradients (features and every parameter) of a seeded MLP."""
    mlp = ComplexMLP(16, 1, seed=3, hidden_features=32, out_init_scale=1.0,
                     hidden_precision=precision, kernels=kernels).to(dtype)
    feats = (torch.rand(16, 3000, generator=torch.Generator().manual_seed(5), dtype=dtype)
             * 0.2 - 0.1).requires_grad_(True)
    y = mlp.forward_split(feats, 1024)  # three chunks, the last one shorter
    return y, torch.autograd.grad(y.square().sum(), [feats, *mlp.parameters()])


def _rel(a, b) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.fixture
def no_compiler(monkeypatch):
    """``torch.compile`` whose compiled functions fail as without a C++ compiler."""
    def broken(fn, **kw):
        def call(*a):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return call
    monkeypatch.setattr(phasor_kernels, "_compiled", None)
    monkeypatch.setattr(phasor_kernels.torch, "compile", broken)


def test_without_a_compiler_the_compiled_kernels_fall_back_to_eager(no_compiler, caplog):
    """A run never fails for want of a compiler: one warning, then the eager numbers."""
    ref_y, ref_g = _run("eager", "float32")
    with caplog.at_level(logging.WARNING, logger=phasor_kernels.__name__):
        y, g = _run("compiled", "float32")
    torch.testing.assert_close(y, ref_y, rtol=0, atol=0)
    for a, b in zip(g, ref_g, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert phasor_kernels.kernels("compiled").mode == "eager"
    assert sum("torch.compile" in r.getMessage() for r in caplog.records) == 1


def test_rnf_run_asked_to_compile_completes_without_a_compiler(no_compiler):
    from ptytasks.simulate.datasets import simulate

    data = simulate("farfield", frame_size=32, n_positions=16, seed=0, dose=1e6)
    r = reconstruct_rnf(data, RNFOptions(epochs=1, batch_size=8, kernels="compiled"))
    assert np.isfinite(np.asarray(r.object)).all()
    assert r.extras["field_kernels"] == "eager"  # as run, after the fallback


def test_auto_compiles_only_runs_with_enough_field_work(monkeypatch):
    """``kernels="auto"``: epochs x steps x object pixels against ``COMPILE_MIN_COORDS``,
    on a CPU where compiling pays (AVX-512); on an AVX2-only CPU it stays eager."""
    from ptytasks.fields import phasor_kernels

    monkeypatch.setattr(phasor_kernels, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    o = RNFOptions()  # 50 epochs, batch 16
    # Siemens star, one tile: 516 frames on 476 x 473 px -> 50 x 33 x 225k = 3.7e8
    assert o.field_kernels(516, 476 * 473) == "compiled"
    # the 100 x 64^2 simulated set: 50 x 7 x 169^2 = 1.0e7
    assert o.field_kernels(100, 169 * 169) == "eager"
    # the rule's edge: exactly the threshold compiles, one step less does not
    px = int(COMPILE_MIN_COORDS) // (50 * 4)
    assert o.field_kernels(64, px) == "compiled"
    assert o.field_kernels(48, px) == "eager"
    assert RNFOptions(kernels="eager").field_kernels(516, 476 * 473) == "eager"
    monkeypatch.setattr(phasor_kernels, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert o.field_kernels(516, 476 * 473) == "eager"  # measured slower there
    assert RNFOptions(kernels="compiled").field_kernels(516, 476 * 473) == "compiled"
    assert RNFOptions(kernels="compiled").field_kernels(1, 1) == "compiled"
    with pytest.raises(ValueError, match="kernels"):
        RNFOptions(kernels="triton")
    with pytest.raises(ValueError, match="kernels"):
        ComplexMLP(16, 1, kernels="fast")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_compiled_kernels_match_eager(precision):
    """``torch.compile``'d kernels (inductor, ~20 s to compile on a cold cache): float32
    agrees to float rounding; with bfloat16 products both round their copies to bfloat16,
    where last-bit differences of sin/cos flip a rounding now and then (measured 1e-4
    relative on the gradients, 7e-4 on the output at 96^2 points)."""
    tol = 1e-5 if precision == "float32" else 5e-3
    ref_y, ref_g = _run("eager", precision)
    y, g = _run("compiled", precision)
    assert phasor_kernels.kernels("compiled").mode == "compiled"
    assert _rel(y, ref_y) < tol
    for a, b in zip(g, ref_g, strict=True):
        if b.numel() > 1:  # (a 1-element bias gradient is a sum with heavy cancellation)
            assert _rel(a, b) < tol
