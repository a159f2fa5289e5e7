"""Complex activations on the *split layout*: a real tensor ``(2, C, ...)`` holding
``(Re z, Im z)`` along dim 0.

Keeping complex activations as two real planes lets every linear layer be one real GEMM
and every activation a few real element-wise kernels with a hand-written backward; on CPU
the field MLP then runs forward + backward 2.5-3.5x faster than with torch's complex dtype
(``bench/bench_fields.py``). :func:`to_split` / :func:`from_split` convert.

The paper's activation is the holomorphic phasor ``exp(i w z)`` (Eq. 1); the others exist
for the activation ablation (paper Supplementary Note 2): complex tanh (Trabelsi 2017),
CReLU (Trabelsi 2017), zReLU (Guberman 2016), modReLU (Arjovsky 2016) and a
modulus ReLU. The paper names "modulus ReLU" without defining it; here it is modReLU with a
fixed, shared threshold (``relu(|z| - t) z / |z|``), i.e. the non-learned form (as the
"modulus" mode of NVIDIA Modulus' ``ComplexReLU``), so that the ablation separates
"phase-preserving magnitude gate" from "learned per-neuron gate".

Frequency ``w`` (Methods): "typically ranging from 1 to 20 for the input layer and fixed
at 1 for the hidden layer". We default the input layer to ``w = 10`` (middle of the
published range; Supplementary Fig. S3 reports the result is robust to it) and the hidden
layers to 1; ``learnable=True`` makes ``w`` a parameter (paper Eq. 4 lists it as learnable).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

ACTIVATIONS = ("phasor", "ctanh", "crelu", "zrelu", "modrelu", "modulus_relu")


def to_split(z: torch.Tensor) -> torch.Tensor:
    """Complex tensor ``(...)`` to split layout ``(2, ...)`` (a copy)."""
    return torch.stack([z.real, z.imag])


def from_split(x: torch.Tensor) -> torch.Tensor:
    """Split layout ``(2, ...)`` to a complex tensor ``(...)``."""
    return torch.complex(x[0], x[1])


def _channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-channel vector ``(C,)`` shaped to broadcast against one plane ``(C, ...)``."""
    return v.view(-1, *([1] * (x.dim() - 2)))


class _PhasorKernel(torch.autograd.Function):
    """``(p, q) -> e^q (cos p, sin p)``: the phasor after its frequency is folded in.

    With ``p = w Re z`` and ``q = -w Im z`` this is ``exp(i w z)``. Forward and backward
    only need the output (``d out/dp = (-out_im, out_re)``, ``d out/dq = out``), so nothing
    else is saved; autograd through exp/cos/sin/mul would keep five tensors.
    """

    @staticmethod
    def forward(ctx, y):
        out = torch.empty_like(y)
        torch.cos(y[0], out=out[0])
        torch.sin(y[0], out=out[1])
        out.mul_(torch.exp(y[1]))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (o,) = ctx.saved_tensors
        grad = torch.empty_like(o)
        torch.mul(g[1], o[0], out=grad[0])
        grad[0].addcmul_(g[0], o[1], value=-1.0)
        torch.mul(g[0], o[0], out=grad[1])
        grad[1].addcmul_(g[1], o[1])
        return grad


class SplitActivation(nn.Module):
    """Base: ``forward(x) = kernel(x * pre_scale)``; ``pre_scale`` may be folded upstream.

    A linear layer followed by this activation can multiply its output rows by
    :meth:`pre_scale` (real part by ``s[0]``, imaginary by ``s[1]``) and call
    :meth:`kernel` directly, saving one element-wise pass.
    """

    def pre_scale(self) -> torch.Tensor | None:
        return None

    def kernel(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pre_scale()
        if s is not None:
            x = x * s.to(x.dtype).view(2, *([1] * (x.dim() - 1)))
        return self.kernel(x)


class Phasor(SplitActivation):
    """Holomorphic phasor ``exp(i w z)`` (paper Eq. 1); satisfies ``d/dz̄ = 0``.

    Parameters
    ----------
    omega : float
        Frequency ``w``.
    learnable : bool
        Make ``w`` a trainable scalar parameter.
    """

    def __init__(self, omega: float = 1.0, learnable: bool = False):
        super().__init__()
        w = torch.tensor(float(omega))
        if learnable:
            self.omega = nn.Parameter(w)
        else:
            self.register_buffer("omega", w)

    def pre_scale(self) -> torch.Tensor:
        return torch.stack([self.omega, -self.omega])

    def kernel(self, y: torch.Tensor) -> torch.Tensor:
        return _PhasorKernel.apply(y)

    def extra_repr(self) -> str:
        learn = isinstance(self.omega, nn.Parameter)
        return f"omega={float(self.omega):g}, learnable={learn}"


class ComplexTanh(SplitActivation):
    """Complex tanh ``tanh(z)`` (holomorphic away from its poles at ``i pi (k + 1/2)``)."""

    def kernel(self, y: torch.Tensor) -> torch.Tensor:
        # tanh(a + ib) = (sinh 2a + i sin 2b) / (cosh 2a + cos 2b); evaluated in real
        # arithmetic with cosh written through exp(-2|a|) to avoid overflow for large |a|.
        a2, b2 = 2 * y[0], 2 * y[1]
        e = torch.exp(-a2.abs())
        den = (1 + e * e) / 2 + e * torch.cos(b2)  # (cosh 2a + cos 2b) * e^{-2|a|}
        re = torch.sign(a2) * (1 - e * e) / 2 / den
        im = e * torch.sin(b2) / den
        return torch.stack([re, im])


class CReLU(SplitActivation):
    """``relu(Re z) + i relu(Im z)`` (split activation; not holomorphic)."""

    def kernel(self, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(y)


class ZReLU(SplitActivation):
    """``z`` where ``0 < arg z < pi/2`` (both parts positive), else 0 (Guberman 2016)."""

    def kernel(self, y: torch.Tensor) -> torch.Tensor:
        keep = (y[0] > 0) & (y[1] > 0)
        return y * keep


def _mod_gate(y: torch.Tensor, bias: torch.Tensor | float) -> torch.Tensor:
    """``relu(|z| + bias) z / |z|`` on split ``y``; eps keeps the gradient finite at 0."""
    r = torch.sqrt(y[0] * y[0] + y[1] * y[1] + 1e-12)
    return y * (torch.relu(r + bias) / r)


class ModReLU(SplitActivation):
    """modReLU ``relu(|z| + b) z / |z|`` with a learnable per-neuron bias (Arjovsky 2016).

    Parameters
    ----------
    features : int
        Number of neurons ``C`` (one bias each).
    bias_init : float
        Initial bias (0: identity gate at the start; negative: dead zone radius).
    """

    def __init__(self, features: int, bias_init: float = 0.0):
        super().__init__()
        self.bias = nn.Parameter(torch.full((features,), float(bias_init)))

    def kernel(self, y: torch.Tensor) -> torch.Tensor:
        return _mod_gate(y, _channel_view(self.bias, y))


class ModulusReLU(SplitActivation):
    """Modulus ReLU ``relu(|z| - t) z / |z|`` with a fixed threshold ``t`` (see module doc)."""

    def __init__(self, threshold: float = 0.05):
        super().__init__()
        self.threshold = float(threshold)

    def kernel(self, y: torch.Tensor) -> torch.Tensor:
        return _mod_gate(y, -self.threshold)


def make_activation(
    name: str,
    features: int,
    *,
    omega: float = 1.0,
    learnable_omega: bool = False,
    modulus_threshold: float = 0.05,
) -> SplitActivation:
    """Build a split-layout activation by name (one of :data:`ACTIVATIONS`)."""
    if name == "phasor":
        return Phasor(omega, learnable_omega)
    if name == "ctanh":
        return ComplexTanh()
    if name == "crelu":
        return CReLU()
    if name == "zrelu":
        return ZReLU()
    if name == "modrelu":
        return ModReLU(features)
    if name == "modulus_relu":
        return ModulusReLU(modulus_threshold)
    raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")
