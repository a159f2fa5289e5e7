"""Complex activations: values vs torch complex references, gradients, Cauchy-Riemann."""

from __future__ import annotations

import pytest
import torch

from ptytasks.fields.activations import (
    ACTIVATIONS,
    ComplexTanh,
    CReLU,
    ModReLU,
    ModulusReLU,
    Phasor,
    ZReLU,
    from_split,
    make_activation,
    to_split,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def points(n=64, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, n, generator=g, dtype=dtype)


def wirtinger_conj(act, x):
    """d f / d zbar = (f_a + i f_b) / 2 per element (activations are element-wise)."""
    a = x[0].clone().requires_grad_(True)
    b = x[1].clone().requires_grad_(True)
    out = act(torch.stack([a, b]))
    ua, ub = torch.autograd.grad(out[0].sum(), (a, b), retain_graph=True)
    va, vb = torch.autograd.grad(out[1].sum(), (a, b))
    return torch.complex(ua - vb, va + ub) / 2


@pytest.mark.parametrize("omega", [1.0, 10.0])
def test_phasor_matches_complex_exp_and_its_gradient(omega):
    x = points() * 0.3
    a, b = (x[0].clone().requires_grad_(True), x[1].clone().requires_grad_(True))
    ref = torch.exp(1j * omega * torch.complex(a, b))
    w = torch.randn(2, *ref.shape, dtype=torch.float64)
    loss_ref = (w[0] * ref.real + w[1] * ref.imag).sum()
    g_ref = torch.autograd.grad(loss_ref, (a, b))
    a2, b2 = (x[0].clone().requires_grad_(True), x[1].clone().requires_grad_(True))
    out = Phasor(omega)(torch.stack([a2, b2]))
    torch.testing.assert_close(from_split(out), ref.detach())
    g = torch.autograd.grad((w * out).sum(), (a2, b2))
    for u, v in zip(g, g_ref, strict=True):
        torch.testing.assert_close(u, v)


def test_phasor_gradcheck_and_learnable_omega():
    x = (points(8) * 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(Phasor(3.0).double(), (x,))
    act = Phasor(2.0, learnable=True).double()
    assert torch.autograd.gradcheck(lambda w, x: Phasor.kernel(act, x * torch.stack([w, -w])
                                                              .view(2, 1, 1)),
                                    (act.omega.detach().clone().requires_grad_(True), x))
    out = act(x.detach())
    out.sum().backward()
    assert act.omega.grad is not None and torch.isfinite(act.omega.grad)


def test_cauchy_riemann_phasor_holds_crelu_breaks():
    x = points(256)
    for act in (Phasor(1.0), Phasor(7.0), ComplexTanh()):
        d = wirtinger_conj(act.double(), x * 0.3)
        assert float(d.abs().max()) < 1e-9, act
    # zReLU is z or 0: holomorphic on each piece (it breaks only across the boundaries)
    assert float(wirtinger_conj(ZReLU(), x).abs().max()) == 0.0
    # split / modulus-gated activations depend on zbar
    for act in (CReLU(), ModReLU(3, bias_init=-0.3).double(), ModulusReLU(0.3)):
        d = wirtinger_conj(act, x)
        assert float(d.abs().max()) > 0.25, act
    # CReLU in the quadrant Re > 0 > Im: f = a, so df/dzbar = 1/2
    q = torch.stack([torch.full((1, 4), 0.7), torch.full((1, 4), -0.4)]).double()
    torch.testing.assert_close(wirtinger_conj(CReLU(), q).real, torch.full((1, 4), 0.5).double())


def test_ctanh_matches_torch_including_large_arguments():
    x = points(200) * 3
    x[0, 0, :3] = torch.tensor([40.0, -60.0, 0.0], dtype=torch.float64)
    ref = torch.tanh(from_split(x))
    torch.testing.assert_close(from_split(ComplexTanh()(x)), ref)


def test_relu_family_definitions():
    x = points(100)
    z = from_split(x)
    torch.testing.assert_close(from_split(CReLU()(x)),
                               torch.complex(z.real.clamp_min(0), z.imag.clamp_min(0)))
    keep = (z.real > 0) & (z.imag > 0)
    torch.testing.assert_close(from_split(ZReLU()(x)), torch.where(keep, z, 0))
    act = ModReLU(3, bias_init=-0.5).double()
    gate = torch.relu(z.abs() - 0.5) / z.abs()
    torch.testing.assert_close(from_split(act(x)), z * gate, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(from_split(ModulusReLU(0.5)(x)), z * gate, atol=1e-6, rtol=1e-6)
    # learnable per-neuron bias gets a gradient; the gate's gradient is finite at z = 0
    zero = torch.zeros(2, 3, 5, dtype=torch.float64, requires_grad=True)
    act(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
    act(x).sum().backward()
    assert act.bias.grad.shape == (3,)


def test_factory_and_split_roundtrip():
    for name in ACTIVATIONS:
        act = make_activation(name, 4, omega=2.0)
        y = act(torch.randn(2, 4, 6))
        assert y.shape == (2, 4, 6)
    with pytest.raises(ValueError):
        make_activation("gelu", 4)
    z = torch.randn(3, 5, dtype=torch.complex64)
    assert torch.equal(from_split(to_split(z)), z)
