"""Complex linear layers and the complex MLP of the residual neural field, in real arithmetic.

Tensors flow *channels first* in the split layout of :mod:`ptytasks.fields.activations`:
``(2, C, P)`` = (real/imaginary plane, neuron, point). A complex layer
``y = W x + b`` is then **one real GEMM** with the stacked weight
``[[Re W, -Im W], [Im W, Re W]]`` of shape ``(2 out, 2 in)`` on ``x`` viewed as
``(2 in, P)``. The GEMM itself costs about what a complex64 GEMM does; the gains (2.5-3.5x
for the MLP forward + backward on CPU, ``bench/bench_fields.py``) come from folding the
phasor frequency into the weight rows, real element-wise kernels with a hand-written
backward, and cache-sized chunks of points. With the phasor (default) the whole chain runs
as one autograd function with a hand-written backward (:mod:`ptytasks.fields.fused_mlp`,
``MLPConfig.fused``).

Architecture (paper Methods): real hash features -> complex layer -> phasor(w0) ->
``hidden_layers`` x [complex layer -> phasor(1)] -> complex linear output. With the default
``hidden_layers = 1`` and 64 neurons this is the paper's "one hidden layer with 64 complex
neurons" in SIREN's counting (the input layer has its own frequency w0, the hidden layer w=1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.utils.checkpoint
from torch import nn

from ptytasks.fields.activations import ACTIVATIONS, from_split, make_activation
from ptytasks.fields.fused_mlp import native_bfloat16, phasor_mlp
from ptytasks.fields.phasor_kernels import KERNEL_MODES

SPLIT_ACTIVATIONS = ("split_relu", "split_sine")


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of the field MLP.

    Attributes
    ----------
    hidden_features : int
        Complex neurons per layer (64).
    hidden_layers : int
        Hidden-to-hidden layers after the input layer (1).
    activation : str
        ``"phasor"`` (paper), ablations ``"ctanh"``, ``"crelu"``, ``"zrelu"``,
        ``"modrelu"``, ``"modulus_relu"``, or a split real-valued MLP ``"split_relu"`` /
        ``"split_sine"`` (two real output channels read as Re/Im).
    first_omega, hidden_omega : float
        Phasor (and split-sine) frequencies of the input / hidden layers (10, 1).
    learnable_omega : bool
        Make the frequencies trainable.
    out_init_scale : float
        Output-layer weights are ``U(+-out_init_scale * sqrt(3 / in))``; small so the
        residual field starts near zero (1e-3).
    modulus_threshold : float
        Fixed threshold of ``"modulus_relu"`` (0.05: small against the ``|z| ~ 0.1-1``
        pre-activations of the default initialisation, so few neurons start dead; 0.5
        left the whole net dead at initialisation).
    split_width : int or None
        Real neurons per layer of the split MLP; default ``2 * hidden_features`` (the same
        number of real numbers per layer as the complex net).
    fused : bool
        Phasor MLP: run the chain as one autograd function with a hand-written backward
        (:mod:`ptytasks.fields.fused_mlp`; same numbers, ~1.5x faster on CPU). ``False``:
        layer-by-layer autograd (the reference). Ignored by other activations and with
        activation checkpointing.
    hidden_precision : {"float32", "bfloat16", "auto"}
        Fused phasor MLP: the dtype of the hidden-to-hidden matrix products (forward and
        both backward products); ``"bfloat16"`` halves their cost where the CPU has
        AVX512-BF16 / AMX or on tensor-core GPUs. The input layer (phases of tens of
        radians at ``first_omega = 10``), the output layer and every phasor stay float32.
        ``"auto"``: bfloat16 where the device multiplies it natively
        (:func:`~ptytasks.fields.fused_mlp.native_bfloat16`), else float32.
    kernels : {"eager", "compiled"}
        Fused phasor MLP: its element-wise steps as eager torch kernels or fused by
        ``torch.compile`` (:mod:`ptytasks.fields.phasor_kernels`; same numbers to float32
        rounding, 1.15-1.25x faster forward + backward on CPU, ~20 s to compile once).
    """

    hidden_features: int = 64
    hidden_layers: int = 1
    activation: str = "phasor"
    first_omega: float = 10.0
    hidden_omega: float = 1.0
    learnable_omega: bool = False
    out_init_scale: float = 1e-3
    modulus_threshold: float = 0.05
    split_width: int | None = None
    fused: bool = True
    hidden_precision: str = "float32"
    kernels: str = "eager"

    def __post_init__(self):
        if self.kernels not in KERNEL_MODES:
            raise ValueError(f"kernels must be one of {KERNEL_MODES}, not {self.kernels!r}")
        if self.hidden_precision not in ("float32", "bfloat16", "auto"):
            raise ValueError("hidden_precision must be 'float32', 'bfloat16' or 'auto', not "
                             f"{self.hidden_precision!r}")


class ComplexLinear(nn.Module):
    """Complex affine map ``y = W x + b`` on split, channels-first tensors.

    Parameters
    ----------
    in_features, out_features : int
    real_input : bool
        Input is real ``(in, P)`` (hash features projected to complex); else split
        ``(2, in, P)``.
    """

    def __init__(
        self, in_features: int, out_features: int, *, real_input: bool = False,
        init: str = "default", omega: float = 1.0, scale: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features, self.real_input = in_features, out_features, real_input
        self.weight_re = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_im = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_re = nn.Parameter(torch.zeros(out_features))
        self.bias_im = nn.Parameter(torch.zeros(out_features))
        self.reset_parameters(init, omega=omega, scale=scale, generator=generator)

    @torch.no_grad()
    def reset_parameters(
        self, kind: str = "default", *, omega: float = 1.0, scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        """Initialise in place.

        ``kind``: ``"first"`` (SIREN input layer: both parts ``U(+-1/in)``),
        ``"hidden"`` (SIREN hidden layer made complex: both parts ``U(+-sqrt(3/in)/omega)``
        so that ``E|w|^2 = 2/(in omega^2)`` as SIREN's real ``U(+-sqrt(6/in)/omega)``),
        ``"default"`` (``U(+-1/sqrt(in))`` like ``nn.Linear``), each times ``scale``.
        Real bias parts ``U(+-1/sqrt(in))`` (phase offsets for the phasor), imaginary bias
        parts 0 (for the phasor they would scale moduli by ``exp(-w b)``); with
        ``scale < 1`` (the output layer) the biases are 0.
        """
        n = self.in_features
        bound = {"first": 1 / n, "hidden": math.sqrt(3 / n) / omega, "default": 1 / math.sqrt(n)}
        if kind not in bound:
            raise ValueError(f"unknown init kind {kind!r}")
        b = bound[kind] * scale
        for w in (self.weight_re, self.weight_im):
            w.copy_((torch.rand(w.shape, generator=generator) * 2 - 1) * b)
        self.bias_im.zero_()
        if scale < 1:
            self.bias_re.zero_()
        else:
            u = torch.rand(self.out_features, generator=generator) * 2 - 1
            self.bias_re.copy_(u / math.sqrt(n))

    def stacked(self, row_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Real weight ``(2 out, 2 in)`` (or ``(2 out, in)`` for real input) and bias ``(2 out,)``.

        ``row_scale`` ``(2,)`` multiplies the real output rows by ``s[0]`` and the imaginary
        ones by ``s[1]`` (folds an activation's pre-scale into the layer).
        """
        wr, wi = self.weight_re, self.weight_im
        if self.real_input:
            w = torch.cat([wr, wi], 0)
        else:
            w = torch.cat([torch.cat([wr, -wi], 1), torch.cat([wi, wr], 1)], 0)
        b = torch.cat([self.bias_re, self.bias_im])
        if row_scale is not None:
            s = row_scale.to(w.dtype).repeat_interleave(self.out_features)
            w, b = w * s[:, None], b * s
        return w, b

    def forward(self, x: torch.Tensor, row_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(in, P)`` real or ``(2, in, P)`` split -> split ``(2, out, P)``."""
        w, b = self.stacked(row_scale)
        p = x.shape[-1]
        y = torch.addmm(b[:, None], w, x.reshape(-1, p))
        return y.view(2, self.out_features, p)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, real_input={self.real_input}"


def resolve_precision(precision: str, device: torch.device, dtype: torch.dtype) -> str:
    """``MLPConfig.hidden_precision`` made concrete for features of ``dtype`` on ``device``:
    ``"auto"`` is bfloat16 where the device multiplies it natively and the field is float32
    (it stands in for float32 products, never float64), else float32.

    Raises
    ------
    ValueError
        ``"bfloat16"`` asked for a float64 field.
    """
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) and dtype == torch.float32 else "float32"
    if precision == "bfloat16" and dtype == torch.float64:
        raise ValueError("hidden_precision 'bfloat16' with a float64 field: use "
                         "'float32' or 'auto' (float64 fields keep float64 products)")
    return precision


class ComplexMLP(nn.Module):
    """Complex MLP from real features to ``out_features`` complex outputs.

    Parameters
    ----------
    in_features : int
        Real input features (hash-encoding ``out_dim``).
    out_features : int
        Complex outputs per point (1 for a field; more for modes/slices).
    config : MLPConfig, optional
    seed : int, optional
        Seeds the initialisation with a private generator.
    **overrides
        Fields of :class:`MLPConfig` to replace.
    """

    def __init__(
        self, in_features: int, out_features: int = 1, config: MLPConfig | None = None, *,
        seed: int | None = None, **overrides,
    ):
        super().__init__()
        cfg = replace(config or MLPConfig(), **overrides)
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"ComplexMLP activation must be one of {ACTIVATIONS}")
        self.config, self.in_features, self.out_features = cfg, in_features, out_features
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        h = cfg.hidden_features
        dims = [in_features] + [h] * (cfg.hidden_layers + 1)
        omegas = [cfg.first_omega] + [cfg.hidden_omega] * cfg.hidden_layers
        siren = cfg.activation == "phasor"
        kinds = ["first"] + ["hidden"] * cfg.hidden_layers if siren else ["default"] * len(omegas)
        self.layers = nn.ModuleList(
            ComplexLinear(dims[i], dims[i + 1], real_input=(i == 0), init=kinds[i],
                          omega=omegas[i], generator=gen)
            for i in range(len(dims) - 1)
        )
        self.acts = nn.ModuleList(
            make_activation(cfg.activation, h, omega=w, learnable_omega=cfg.learnable_omega,
                            modulus_threshold=cfg.modulus_threshold)
            for w in omegas
        )
        self.out = ComplexLinear(h, out_features, init="hidden" if siren else "default",
                                 scale=cfg.out_init_scale, generator=gen)

    def forward_split(
        self, feats: torch.Tensor, chunk_size: int | None = None, checkpoint: bool = False
    ) -> torch.Tensor:
        """Channels-first real features ``(in, P)`` -> split output ``(2, out, P)``.

        Parameters
        ----------
        chunk_size : int, optional
            Evaluate ``chunk_size`` points at a time. On CPU ~2048 keeps each chunk's
            activations in cache and off fresh pages, and is markedly faster end to end
            (forward + backward) than one pass over 512^2 points
            (``bench/bench_fields.py``); on GPU leave ``None``.
        checkpoint : bool
            Recompute each chunk's activations in the backward pass
            (``torch.utils.checkpoint``): memory falls to the outputs, at ~1.4x the time.
        """
        # stacked weights (activation frequencies folded in) are built once per call
        pairs = zip(self.layers, self.acts, strict=True)
        params = [t for layer, act in pairs for t in layer.stacked(act.pre_scale())]
        params += list(self.out.stacked())
        if self.config.fused and self.config.activation == "phasor" and not checkpoint:
            prec = resolve_precision(self.config.hidden_precision, feats.device, feats.dtype)
            low = {"float32": None, "bfloat16": torch.bfloat16}[prec]
            y = phasor_mlp(feats, params, chunk_size, low, self.config.kernels)
        else:
            y = _chunked(self._chain, feats, params, chunk_size, checkpoint)
        return y.view(2, self.out_features, -1)

    def _chain(self, x: torch.Tensor, *wb: torch.Tensor) -> torch.Tensor:
        """Layers on one chunk ``x`` ``(in, n)`` given stacked (weight, bias) pairs."""
        n = x.shape[-1]
        h = x
        for i, act in enumerate(self.acts):
            y = torch.addmm(wb[2 * i + 1][:, None], wb[2 * i], h.reshape(-1, n))
            h = act.kernel(y.view(2, -1, n))
        return torch.addmm(wb[-1][:, None], wb[-2], h.reshape(-1, n))

    def forward(self, feats: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Real features ``(..., in)`` -> complex ``(..., out)``."""
        lead = feats.shape[:-1]
        y = self.forward_split(feats.reshape(-1, self.in_features).T, chunk_size)
        return from_split(y).T.reshape(*lead, self.out_features)


class SplitRealMLP(nn.Module):
    """Real-valued MLP whose two output channels per field are read as (Re, Im): the
    "split-channel" baseline the paper argues against. Same interface as :class:`ComplexMLP`.

    ``"split_relu"``: ReLU, ``nn.Linear`` default init, ``"split_sine"``: SIREN
    (``sin(w x)``, SIREN init with ``first_omega`` / ``hidden_omega``).
    """

    def __init__(
        self, in_features: int, out_features: int = 1, config: MLPConfig | None = None, *,
        seed: int | None = None, **overrides,
    ):
        super().__init__()
        cfg = replace(config or MLPConfig(activation="split_relu"), **overrides)
        if cfg.activation not in SPLIT_ACTIVATIONS:
            raise ValueError(f"SplitRealMLP activation must be one of {SPLIT_ACTIVATIONS}")
        self.config, self.in_features, self.out_features = cfg, in_features, out_features
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        width = cfg.split_width or 2 * cfg.hidden_features
        dims = [in_features] + [width] * (cfg.hidden_layers + 1) + [2 * out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.sine = cfg.activation == "split_sine"
        self.omegas = [cfg.first_omega] + [cfg.hidden_omega] * cfg.hidden_layers
        for i in range(len(dims) - 1):
            n_in, last = dims[i], i == len(dims) - 2
            if self.sine and i == 0:
                bound = 1 / n_in
            elif self.sine:
                bound = math.sqrt(6 / n_in) / self.omegas[min(i, len(self.omegas) - 1)]
            else:
                bound = 1 / math.sqrt(n_in)
            if last:
                bound *= cfg.out_init_scale
            w = (torch.rand(dims[i + 1], n_in, generator=gen) * 2 - 1) * bound
            b = (torch.rand(dims[i + 1], generator=gen) * 2 - 1) / math.sqrt(n_in)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b * 0 if last else b))

    def forward_split(
        self, feats: torch.Tensor, chunk_size: int | None = None, checkpoint: bool = False
    ) -> torch.Tensor:
        """As :meth:`ComplexMLP.forward_split`."""
        params = [t for wb in zip(self.weights, self.biases, strict=True) for t in wb]
        y = _chunked(self._chain, feats, params, chunk_size, checkpoint)
        return y.view(2, self.out_features, -1)

    def _chain(self, h: torch.Tensor, *wb: torch.Tensor) -> torch.Tensor:
        n = len(wb) // 2
        for i in range(n):
            h = torch.addmm(wb[2 * i + 1][:, None], wb[2 * i], h)
            if i < n - 1:
                h = torch.sin(self.omegas[i] * h) if self.sine else torch.relu(h)
        return h

    def forward(self, feats: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        lead = feats.shape[:-1]
        y = self.forward_split(feats.reshape(-1, self.in_features).T, chunk_size)
        return from_split(y).T.reshape(*lead, self.out_features)


def _chunked(chain, feats, params, chunk_size, checkpoint) -> torch.Tensor:
    """``chain(chunk, *params)`` over column chunks of ``feats``, concatenated along points."""
    if not chunk_size or chunk_size >= feats.shape[-1]:
        chunks = [feats]
    else:
        # split() (not slicing in a loop): its backward is one concatenation, whereas each
        # slice's backward zero-fills a full-size gradient (measured 13% of a 512^2 step).
        chunks = feats.split(int(chunk_size), dim=-1)
    outs = []
    for x in chunks:
        if checkpoint and torch.is_grad_enabled():
            outs.append(torch.utils.checkpoint.checkpoint(chain, x, *params, use_reentrant=False))
        else:
            outs.append(chain(x, *params))
    return outs[0] if len(outs) == 1 else torch.cat(outs, -1)


def build_mlp(
    in_features: int, out_features: int = 1, config: MLPConfig | None = None, *,
    seed: int | None = None, **overrides,
) -> ComplexMLP | SplitRealMLP:
    """:class:`ComplexMLP` or, for ``"split_*"`` activations, :class:`SplitRealMLP`."""
    cfg = replace(config or MLPConfig(), **overrides)
    cls = SplitRealMLP if cfg.activation in SPLIT_ACTIVATIONS else ComplexMLP
    return cls(in_features, out_features, cfg, seed=seed)
