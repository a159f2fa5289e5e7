"""The phasor MLP as one autograd function: chunked forward, hand-written backward.

:class:`~ptytasks.fields.complex_layers.ComplexMLP` with the paper's phasor activation is a
chain of real GEMMs on the split layout (``(2 C, P)`` rows: real parts, then imaginary
parts) and phasor kernels ``(p, q) -> e^q (cos p, sin p)``. Through autograd each layer
costs extra passes over its ``(2 C, P)`` activations that dominate on CPU next to the
128 x 128 GEMM (measured with ``torch.profiler`` on an RNF epoch):

* ``addmm`` with a broadcast bias first copies the bias into the output (one write pass),
  and the bias gradient is a separate ``sum`` pass;
* the output layer's input gradient is a ``K = 2`` matrix product, which BLAS runs at a
  fraction of its speed (as long as the 128 x 128 forward GEMM on 16384 points);
* chunk outputs are concatenated, gradients split, and every chunk allocates fresh
  buffers (page faults on first touch).

Here the whole chain runs under one :class:`torch.autograd.Function`. Each hidden
activation is stored as ``(2 C + 1, n)`` with a last row of ones, so a layer is one plain
``mm`` with the bias as an extra weight column and the bias gradient falls out of the
weight-gradient GEMM. The backward walks the chunks once, accumulating weight gradients
in place (``addmm_``), and forms the ``K = 2`` product by broadcasting. Only the phasor
outputs are saved (as :class:`~ptytasks.fields.activations.Phasor` does), so memory is
unchanged. The result equals the layer-by-layer autograd chain to float rounding
(``tests/fields/test_complex_layers.py``); device agnostic (on GPU: one chunk).

With ``hidden_dtype=torch.bfloat16`` the hidden-to-hidden products (forward, weight and
input gradients) run in bfloat16 with float32 accumulation: 1.6-1.9x faster products on a CPU
with AVX512-BF16 (tensor cores on GPU), ~1-2 % relative change of outputs and gradients.
Each such layer's input is kept in both precisions (+50 % of its activation memory).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ptytasks.fields.phasor_kernels import cpu_flags
from ptytasks.fields.phasor_kernels import kernels as _kernels


def _augment(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(D, n)`` with a row of ones appended: ``(D + 1, n)``."""
    out = torch.empty(x.shape[0] + 1, x.shape[1], dtype=x.dtype, device=x.device)
    out[:-1].copy_(x)
    out[-1].fill_(1.0)
    return out


class PhasorMLPFunction(torch.autograd.Function):
    """``out = W_L phasor(... phasor(W_1 x + b_1) ...) + b_L`` on channels-first input.

    ``forward(ctx, x, chunk, hidden_dtype, kernels, *wb)``: ``x`` ``(D, P)`` real features,
    ``chunk`` points per chunk (``None``: all), ``hidden_dtype`` and ``kernels`` (see
    :func:`phasor_mlp`), ``wb``
    the stacked ``(weight, bias)`` pairs of every layer with the phasor frequencies folded
    in (``ComplexLinear.stacked(act.pre_scale())``); the last pair is the output layer.
    Returns ``(2 out, P)``.
    """

    @staticmethod
    def forward(ctx, x, chunk, hidden_dtype, kernels, *wb):
        kern = _kernels(kernels)
        p = x.shape[-1]
        chunk = max(1, p if not chunk else min(int(chunk), p))
        mats = [torch.cat([w, b[:, None]], 1) for w, b in zip(wb[::2], wb[1::2], strict=True)]
        # hidden-to-hidden products in a low-precision dtype (bfloat16): the first layer
        # (phases up to first_omega * |W x|, tens of radians) and the output stay float32
        low = [m.to(hidden_dtype) if 0 < i < len(mats) - 1 and hidden_dtype is not None
               else None for i, m in enumerate(mats)]
        out = torch.empty(mats[-1].shape[0], p, dtype=x.dtype, device=x.device)
        # per chunk: augmented input, then each hidden activation (augmented); beside them
        # the low-precision copies of the inputs of the low-precision layers
        saved, saved_low = [], []
        for s in range(0, p, chunk):
            h = _augment(x[:, s:s + chunk])
            acts, lows = [h], [None]
            for i, m in enumerate(mats[:-1]):
                # low-precision product, float32 phasor (the elementwise maths stays exact)
                y = torch.mm(m, h) if low[i] is None else torch.mm(low[i], lows[-1])
                h, h_low = kern.phasor(y, x.dtype,
                                       hidden_dtype if low[i + 1] is not None else None)
                acts.append(h)
                lows.append(h_low)
            torch.mm(mats[-1], h, out=out[:, s:s + chunk])
            saved.append(acts)
            saved_low.append(lows)
        ctx.saved_low = saved_low
        ctx.saved = saved
        ctx.mats = mats
        ctx.low = low
        ctx.chunk = chunk
        ctx.kern = kern
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        mats, chunk, saved, low, kern = ctx.mats, ctx.chunk, ctx.saved, ctx.low, ctx.kern
        need_x = ctx.needs_input_grad[0]
        gmats = [torch.zeros_like(m) for m in mats]
        # the first layer's gradient is accumulated transposed, (D + 1, 2 C) += x g^T:
        # BLAS runs that shape ~2x faster than (2 C, D + 1) += g x^T for small D
        gmats[0] = gmats[0].T.contiguous()
        gx = None
        if need_x:
            d = mats[0].shape[1] - 1
            gx = torch.empty(d, grad.shape[-1], dtype=grad.dtype, device=grad.device)
        wo = mats[-1][:, :-1]  # (2 out, 2 C)
        for k, (acts, lows) in enumerate(zip(saved, ctx.saved_low, strict=True)):
            s = k * chunk
            g = grad[:, s:s + chunk]
            h = acts[-1]
            gmats[-1].addmm_(g, h.T)
            gh = None  # gradient wrt the current layer's phasor output, set below
            for i in range(len(mats) - 2, -1, -1):
                ld = low[i].dtype if i > 0 and low[i] is not None else None
                # the output layer's W_o^T g (K = 2) is formed inside its phasor gradient
                gy, gyl = (kern.head_grad(wo, g, acts[i + 1], grad.dtype, ld)
                           if i == len(mats) - 2
                           else kern.phasor_grad(gh, acts[i + 1], grad.dtype, ld))
                if ld is not None:
                    gmats[i].add_(torch.mm(gyl, lows[i].T))
                    gh = torch.mm(low[i][:, :-1].T, gyl)
                    continue
                if i > 0:
                    gmats[i].addmm_(gy, acts[i].T)
                    gh = torch.mm(mats[i][:, :-1].T, gy)
                    continue
                gmats[0].addmm_(acts[0], gy.T)
                if need_x:
                    torch.mm(mats[0][:, :-1].T, gy, out=gx[:, s:s + gy.shape[1]])
        # ctx.saved is left for autograd to free with the graph: a graph retained
        # (retain_graph=True) can be walked again, as with torch's own layers
        gmats[0] = gmats[0].T
        grads = []
        for gm in gmats:
            grads += [gm[:, :-1], gm[:, -1]]
        return (gx, None, None, None, *grads)


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA device with
    bfloat16 support, or a CPU with AVX512-BF16 or AMX-BF16 (read from ``/proc/cpuinfo``;
    elsewhere ``False``). Without it, bfloat16 products are emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def phasor_mlp(x: torch.Tensor, wb: list[torch.Tensor], chunk: int | None,
               hidden_dtype: torch.dtype | None = None,
               kernels: str = "eager") -> torch.Tensor:
    """Apply :class:`PhasorMLPFunction` (see there); ``wb`` as ``ComplexMLP`` stacks them.

    ``hidden_dtype``: run the hidden-to-hidden products (forward and both backward
    products) in this dtype, e.g. ``torch.bfloat16``; ``None``: all float32.
    ``kernels``: the element-wise steps eager or fused by ``torch.compile``
    (:mod:`ptytasks.fields.phasor_kernels`).
    """
    return PhasorMLPFunction.apply(x, chunk, hidden_dtype, kernels, *wb)
