"""Complex layers in real arithmetic vs torch complex-dtype references."""

from __future__ import annotations

import math

import pytest
import torch

from ptytasks.fields.activations import from_split, to_split
from ptytasks.fields.complex_layers import (
    ComplexLinear,
    ComplexMLP,
    MLPConfig,
    SplitRealMLP,
    build_mlp,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def cweight(layer: ComplexLinear):
    return torch.complex(layer.weight_re, layer.weight_im), torch.complex(layer.bias_re,
                                                                          layer.bias_im)


def reference_mlp(mlp: ComplexMLP, feats: torch.Tensor) -> torch.Tensor:
    """Complex-dtype forward: feats (P, in) real -> (P, out) complex, phasor activations."""
    h = feats.to(torch.complex128 if feats.dtype == torch.float64 else torch.complex64)
    for layer, act in zip(mlp.layers, mlp.acts, strict=True):
        w, b = cweight(layer)
        h = torch.exp(1j * act.omega * (h @ w.T + b))
    w, b = cweight(mlp.out)
    return h @ w.T + b


@pytest.mark.parametrize("real_input", [True, False])
def test_complex_linear_matches_complex_matmul(real_input):
    torch.manual_seed(1)
    lin = ComplexLinear(5, 7, real_input=real_input).double()
    with torch.no_grad():
        lin.bias_im.normal_()
    if real_input:
        x = torch.randn(5, 11, dtype=torch.float64)
        xc = x.to(torch.complex128)
    else:
        xc = torch.randn(5, 11, dtype=torch.complex128)
        x = to_split(xc)
    w, b = cweight(lin)
    ref = w @ xc + b[:, None]
    out = from_split(lin(x))
    torch.testing.assert_close(out, ref)
    # gradients through both routes agree (real loss of the output)
    g = torch.randn(7, 11, dtype=torch.complex128)
    params = list(lin.parameters())
    g1 = torch.autograd.grad((out * g.conj()).real.sum(), params)
    g2 = torch.autograd.grad((ref * g.conj()).real.sum(), params)
    for a, c in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, c)
    # a row scale multiplies real rows by s0 and imaginary rows by s1
    s = torch.tensor([2.0, -3.0], dtype=torch.float64)
    y = lin(x, s)
    torch.testing.assert_close(y[0], 2 * ref.real)
    torch.testing.assert_close(y[1], -3 * ref.imag)


def test_mlp_matches_complex_reference_values_and_gradients():
    mlp = ComplexMLP(12, 2, seed=0, out_init_scale=1.0, learnable_omega=True).double()
    feats = torch.rand(40, 12, dtype=torch.float64) * 0.2
    out = mlp(feats)
    ref = reference_mlp(mlp, feats)
    assert out.shape == (40, 2) and out.dtype == torch.complex128
    torch.testing.assert_close(out, ref)
    g = torch.randn(40, 2, dtype=torch.complex128)
    params = list(mlp.parameters())
    g1 = torch.autograd.grad((out * g.conj()).real.sum(), params)
    g2 = torch.autograd.grad((ref * g.conj()).real.sum(), params)
    for a, c in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, c)
    assert any(p is mlp.acts[0].omega for p in params)


def test_chunking_and_checkpoint_are_exact():
    mlp = ComplexMLP(6, 1, seed=0, out_init_scale=1.0).double()
    feats = torch.rand(6, 1000, dtype=torch.float64) * 0.1
    ref = mlp.forward_split(feats)
    ref_g = torch.autograd.grad(ref.square().sum(), list(mlp.parameters()))
    for kw in (dict(chunk_size=128), dict(chunk_size=300, checkpoint=True)):
        y = mlp.forward_split(feats, **kw)
        torch.testing.assert_close(y, ref)
        g = torch.autograd.grad(y.square().sum(), list(mlp.parameters()))
        for a, c in zip(g, ref_g, strict=True):
            torch.testing.assert_close(a, c)


@pytest.mark.parametrize("hidden_layers,out,chunk,learn", [(1, 1, None, False),
                                                           (2, 3, 257, True), (0, 2, 100, False)])
def test_fused_phasor_mlp_matches_autograd_chain(hidden_layers, out, chunk, learn):
    """The one-function phasor MLP (default) equals the layer-by-layer autograd chain:
    outputs, input gradient and every parameter gradient (omega included)."""
    mlp = ComplexMLP(14, out, seed=3, hidden_features=16, hidden_layers=hidden_layers,
                     learnable_omega=learn).double()
    assert mlp.config.fused
    feats = (torch.rand(14, 1000, dtype=torch.float64) * 0.2 - 0.1).requires_grad_(True)
    params = [feats, *mlp.parameters()]
    y = mlp.forward_split(feats, chunk)
    g = torch.autograd.grad(y.sin().sum(), params)
    object.__setattr__(mlp.config, "fused", False)
    ref = mlp.forward_split(feats, chunk)
    ref_g = torch.autograd.grad(ref.sin().sum(), params)
    torch.testing.assert_close(y, ref)
    for a, c in zip(g, ref_g, strict=True):
        torch.testing.assert_close(a, c)


def test_fused_phasor_mlp_backward_twice_with_a_retained_graph():
    """``retain_graph=True`` keeps what a second backward needs, as autograd's own layers do:
    the second pass gives the same gradients as the first."""
    mlp = ComplexMLP(14, 2, seed=3, hidden_features=16).double()
    feats = (torch.rand(14, 300, dtype=torch.float64) * 0.2 - 0.1).requires_grad_(True)
    loss = mlp.forward_split(feats, 100).sin().sum()
    first = torch.autograd.grad(loss, [feats, *mlp.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [feats, *mlp.parameters()])
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("hidden_layers", [1, 2])
def test_bfloat16_hidden_products_stay_close_to_float32(hidden_layers):
    """``hidden_precision="bfloat16"``: only the hidden-to-hidden products change, by
    bfloat16 rounding (~1-2 % of output and gradients, measured 1.6 %), not more; with no
    hidden-to-hidden layer nothing changes at all."""
    kw = dict(seed=3, hidden_features=32, hidden_layers=hidden_layers, out_init_scale=1.0)
    ref = ComplexMLP(16, 1, **kw)
    low = ComplexMLP(16, 1, hidden_precision="bfloat16", **kw)
    feats = (torch.rand(16, 3000) * 0.2 - 0.1).requires_grad_(True)
    rel = lambda a, b: float((a - b).detach().norm() / b.detach().norm())  # noqa: E731
    outs = []
    for mlp in (ref, low):
        y = mlp.forward_split(feats, 1024)
        outs.append((y, torch.autograd.grad(y.square().sum(), [feats, *mlp.parameters()])))
    (y0, g0), (y1, g1) = outs
    assert 1e-4 < rel(y1, y0) < 0.05
    for a, b in zip(g1, g0, strict=True):
        if b.numel() > 1:  # (a 1-element bias gradient is a sum with heavy cancellation)
            assert rel(a, b) < 0.05
    assert rel(torch.cat([a.flatten() for a in g1]), torch.cat([b.flatten() for b in g0])) < 0.05
    flat = ComplexMLP(16, 1, seed=3, hidden_features=32, hidden_layers=0)
    flat_low = ComplexMLP(16, 1, seed=3, hidden_features=32, hidden_layers=0,
                          hidden_precision="bfloat16")
    torch.testing.assert_close(flat_low.forward_split(feats), flat.forward_split(feats))
    with pytest.raises(ValueError, match="hidden_precision"):
        ComplexMLP(16, 1, hidden_precision="float16")


def test_siren_initialisation_bounds():
    mlp = ComplexMLP(32, 1, seed=0)
    first, hidden = mlp.layers
    mlp.requires_grad_(False)
    assert float(first.weight_re.abs().max()) <= 1 / 32
    assert float(first.weight_re.abs().max()) > 0.8 / 32
    bound = math.sqrt(3 / 64) / 1.0
    assert bound * 0.8 < float(hidden.weight_im.abs().max()) <= bound
    assert float(mlp.out.weight_re.abs().max()) <= 1e-3 * bound
    assert float(first.bias_im.abs().max()) == 0.0
    assert float(mlp.out.bias_re.abs().max()) == 0.0
    # seeded: same seed, same weights; global RNG untouched
    state = torch.get_rng_state()
    other = ComplexMLP(32, 1, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    for a, b in zip(mlp.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("act", ["ctanh", "crelu", "zrelu", "modrelu", "modulus_relu",
                                 "split_relu", "split_sine"])
def test_ablation_mlps_build_and_differentiate(act):
    mlp = build_mlp(8, 3, MLPConfig(activation=act, out_init_scale=1.0), seed=0)
    assert isinstance(mlp, SplitRealMLP if act.startswith("split") else ComplexMLP)
    feats = torch.rand(4, 5, 8)
    out = mlp(feats)
    assert out.shape == (4, 5, 3) and out.is_complex()
    out.abs().sum().backward()
    grads = [p.grad for p in mlp.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_split_mlp_width_and_errors():
    mlp = SplitRealMLP(8, 1, MLPConfig(activation="split_relu"))
    assert mlp.weights[0].shape == (128, 8) and mlp.weights[-1].shape == (2, 128)
    with pytest.raises(ValueError):
        ComplexMLP(8, 1, activation="split_relu")
    with pytest.raises(ValueError):
        SplitRealMLP(8, 1, MLPConfig(activation="phasor"))
