"""The element-wise kernels of the fused phasor MLP, eager or compiled by ``torch.compile``.

Between its matrix products :class:`~ptytasks.fields.fused_mlp.PhasorMLPFunction` runs
three element-wise steps per chunk of points:

* ``phasor``: ``y = (p; q)`` ``(2 C, n)`` -> ``h = (e^q cos p; e^q sin p; 1)``
  ``(2 C + 1, n)`` (the row of ones carries the next layer's bias), plus a low-precision
  copy of ``h`` when the next product runs in bfloat16;
* ``phasor_grad``: the gradient wrt ``y`` from the gradient ``g`` wrt ``h``;
* ``head_grad``: ``phasor_grad`` of the output layer's ``W_o^T g`` (``K = 2``: formed by
  broadcasting, BLAS is slow at tiny ``K``).

Each takes the working ``dtype`` (a bfloat16 product's output is widened inside the
kernel) and the dtype of a low-precision copy of its result, returned beside it (``None``:
no copy) for a following bfloat16 product.

Eager, each is several passes over ``(2 C, n)`` (torch's ``sin``/``cos`` cost 1.3-1.7 ns per
value on this CPU, ``exp`` and the products more passes, then the dtype copies).
``torch.compile`` (inductor; C++ with vectorised SLEEF maths on CPU, Triton on CUDA) fuses
each step into one pass: the phasor runs ~3x faster, the field's forward + backward
1.15-1.25x (``bench/bench_rnf_speed.py``, ``field_compiled``). Values agree with the eager
kernels to float32 rounding (the vectorised sin/cos differ in the last bits).

Compiling costs ~20 s the first time on a machine (2 cores), ~3 s in a later process (the
inductor cache on disk), so :func:`kernels` compiles only when asked; the RNF engine asks
above a work threshold (``RNFOptions.kernels``). Where compiling fails (no C++ compiler,
an unsupported platform) the eager kernels are used with one warning: a run never fails
for want of a compiler.
"""

from __future__ import annotations

import functools
import logging
import types

import torch

log = logging.getLogger(__name__)

KERNEL_MODES = ("eager", "compiled")


# ---------------------------------------------------------------------------- where
@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def compile_pays(device: str | torch.device) -> bool:
    """Whether compiled kernels beat eager ones on ``device`` (``kernels="auto"``): on
    CUDA, and on a CPU with AVX-512. Measured: on an AVX-512 host the field's forward +
    backward 1.14x / 1.31x faster (one thread / two workers), the star's epoch 1.45x; on an
    AVX2-only host 0.96x / 0.96x and 0.93x (``bench/results/records/
    rnf-speed-cpu-nobf16-8710420.json``; one host of each kind, so the rule is the
    simplest that fits both: presumably inductor's vectorised sin / cos gain with the width)."""
    return torch.device(device).type != "cpu" or "avx512f" in cpu_flags()


# ---------------------------------------------------------------------------- eager
def _phasor_into(y: torch.Tensor, h: torch.Tensor) -> None:
    """``h[:2C] = e^q (cos p, sin p)`` for ``y = (p; q)`` ``(2 C, n)``; ``h[2C] = 1``."""
    c = y.shape[0] // 2
    e = torch.exp(y[c:])
    torch.cos(y[:c], out=h[:c])
    torch.sin(y[:c], out=h[c:2 * c])
    h[:2 * c].view(2, c, -1).mul_(e)
    h[2 * c].fill_(1.0)


def _phasor_eager(y, dtype, low_dtype):
    y = y.to(dtype)
    h = torch.empty(y.shape[0] + 1, y.shape[1], dtype=y.dtype, device=y.device)
    _phasor_into(y, h)
    return h, (None if low_dtype is None else h.to(low_dtype))


def _phasor_grad_eager(g, h, dtype, low_dtype):
    g = g.to(dtype)
    c = g.shape[0] // 2
    g_re, g_im, o_re, o_im = g[:c], g[c:], h[:c], h[c:2 * c]
    out = torch.empty_like(g)
    torch.mul(g_im, o_re, out=out[:c])
    out[:c].addcmul_(g_re, o_im, value=-1.0)
    torch.mul(g_re, o_re, out=out[c:])
    out[c:].addcmul_(g_im, o_im)
    return out, (None if low_dtype is None else out.to(low_dtype))


def _head_grad_eager(wo, g, h, dtype, low_dtype):
    gh = wo[0][:, None] * g[0]
    for j in range(1, wo.shape[0]):
        gh.addcmul_(wo[j][:, None], g[j])
    return _phasor_grad_eager(gh, h, dtype, low_dtype)


# ---------------------------------------------------------------------------- to compile
# The same maths written without ``out=`` and in-place ops, which inductor fuses best.
def _phasor_pure(y, dtype, low_dtype):
    y = y.to(dtype)
    c = y.shape[0] // 2
    e = torch.exp(y[c:])
    h = torch.cat([torch.cos(y[:c]) * e, torch.sin(y[:c]) * e,
                   torch.ones(1, y.shape[1], dtype=y.dtype, device=y.device)])
    return h, (None if low_dtype is None else h.to(low_dtype))


def _phasor_grad_pure(g, h, dtype, low_dtype):
    g = g.to(dtype)
    c = g.shape[0] // 2
    g_re, g_im, o_re, o_im = g[:c], g[c:], h[:c], h[c:2 * c]
    out = torch.cat([g_im * o_re - g_re * o_im, g_re * o_re + g_im * o_im])
    return out, (None if low_dtype is None else out.to(low_dtype))


def _head_grad_pure(wo, g, h, dtype, low_dtype):
    return _phasor_grad_pure((wo[:, :, None] * g[:, None, :]).sum(0), h, dtype, low_dtype)


EAGER = types.SimpleNamespace(mode="eager", phasor=_phasor_eager,
                              phasor_grad=_phasor_grad_eager, head_grad=_head_grad_eager)
_compiled: types.SimpleNamespace | None = None


class _Guarded:
    """A compiled kernel that falls back to its eager twin, for good, on a compile error."""

    def __init__(self, name, pure, eager):
        self.name, self.eager = name, eager
        self.fn = torch.compile(pure, dynamic=True)

    def __call__(self, *args):
        if self.fn is not None:
            try:
                return self.fn(*args)
            except torch.OutOfMemoryError:
                raise  # not the compiler's fault: eager would run out as well
            except Exception as exc:  # noqa: BLE001 -- any compiler failure: run eager
                log.warning("torch.compile of the phasor kernel %r failed (%s: %s); using "
                            "the eager kernels", self.name, type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")
                _fall_back()
        return self.eager(*args)


def _fall_back() -> None:
    if _compiled is not None:
        for k in ("phasor", "phasor_grad", "head_grad"):
            getattr(_compiled, k).fn = None
        _compiled.mode = "eager"


def kernels(mode: str) -> types.SimpleNamespace:
    """The kernel set for ``mode`` (``"eager"`` or ``"compiled"``), built once per process.

    ``.mode`` of the compiled set reads ``"eager"`` once it has fallen back.
    """
    global _compiled
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernels must be one of {KERNEL_MODES}, not {mode!r}")
    if mode == "eager":
        return EAGER
    if _compiled is None:
        _compiled = types.SimpleNamespace(
            mode="compiled",
            phasor=_Guarded("phasor", _phasor_pure, _phasor_eager),
            phasor_grad=_Guarded("phasor_grad", _phasor_grad_pure, _phasor_grad_eager),
            head_grad=_Guarded("head_grad", _head_grad_pure, _head_grad_eager))
    return _compiled
