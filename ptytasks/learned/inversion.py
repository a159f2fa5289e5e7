"""Single-shot inversion networks: diffraction pattern in, object amplitude and phase out.

* :class:`PtychoNN` -- the CNN baseline of Cherukara et al. (2020): a conv/max-pool
  encoder and two conv/upsampling decoders (amplitude, phase).
* :class:`PPN` -- Nakahata et al.'s physics-inspired network (PtychoFormer / PPN): a
  local ViT branch on ``patch x patch`` tokens and a non-local branch whose attention is
  polar-coordinate attention (:mod:`~ptytasks.learned.polar_attention`), fused by a 1x1
  convolution and decoded by transposed convolutions into amplitude and phase heads.

Both take ``(B, 1, N, N)`` normalised frames (:func:`~ptytasks.learned.single_shot_data.
normalize_frames`) and return ``(amplitude, phase)``, each ``(B, M, M)``, under the output
constraints of PtychoFormer (eq. 13): ``A = A_max sigmoid(a / A_max)`` (in ``(0, A_max)``),
``phi = pi tanh(p)`` radians.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ptytasks.learned.polar_attention import Block, PolarAttention, SelfAttention
from ptytasks.learned.single_shot_data import Geometry, NoiseModel

MODELS = ("ppn", "ptychonn")


@dataclass
class InversionConfig:
    """Architecture and data geometry of a single-shot network.

    Attributes
    ----------
    model : {"ppn", "ptychonn"}
    geometry : Geometry
        Frame side ``N``, probe footprint and output side ``M``.
    noise : NoiseModel
        The training measurement model (its amplitude and phase ranges also set the loss
        normalisation and the output heads' initial bias).
    dim : int
        PPN token width (and fused channels); PtychoNN's deepest channel count is ``2 dim``.
    heads, patch, local_depth, nonlocal_depth, nonlocal_stride, mlp_ratio :
        PPN: attention heads, ViT patch side, blocks per branch, stride of the non-local
        branch's convolutional embedding (``N / stride`` tokens a side), FFN width ratio.
    radial_log_scale : float
        PoCA's log-radial scale ``k``.
    stem : int
        PPN: channels of the non-local branch's convolutional projection (two 3x3
        convolutions at full resolution before the strided embedding; 0: embedding only).
    amp_max : float
        ``A_max`` of the amplitude constraint (dimensionless transmission).
    local_stem : int
        PPN: channels of a convolutional stem of the local branch (two 3x3 convolutions with
        BatchNorm and ReLU at full resolution before the patch embedding; 0: none). Early
        convolutions make ViTs train faster and more stably (Xiao et al. 2021).
    """

    model: str = "ppn"
    geometry: Geometry = field(default_factory=Geometry)
    noise: NoiseModel = field(default_factory=NoiseModel)
    dim: int = 48
    heads: int = 2
    patch: int = 4
    local_depth: int = 2
    nonlocal_depth: int = 2
    nonlocal_stride: int = 4
    mlp_ratio: float = 2.0
    radial_log_scale: float = 8.0
    amp_max: float = 1.2
    stem: int = 0
    local_stem: int = 16

    @classmethod
    def from_dict(cls, d: dict) -> InversionConfig:
        d = dict(d)
        d.setdefault("local_stem", 0)  # weights written before the local stem existed
        g = Geometry(**d.pop("geometry", {}))
        nz = d.pop("noise", {})
        nz = NoiseModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in nz.items()})
        return cls(geometry=g, noise=nz, **d)


class Heads(nn.Module):
    """Amplitude and phase outputs with PtychoFormer's constraints and centred start values."""

    def __init__(self, channels: int, cfg: InversionConfig):
        super().__init__()
        self.amp_max = float(cfg.amp_max)
        self.amp = nn.Conv2d(channels, 1, 3, padding=1)
        self.phase = nn.Conv2d(channels, 1, 3, padding=1)
        a_mid = min(0.95, sum(cfg.noise.amplitude_range) / 2 / self.amp_max)
        p_mid = max(-0.95, min(0.95, sum(cfg.noise.phase_range) / 2 / math.pi))
        with torch.no_grad():  # start at the middle of the training ranges
            self.amp.bias.fill_(self.amp_max * math.log(a_mid / (1 - a_mid)))
            self.phase.bias.fill_(math.atanh(p_mid))
            self.amp.weight.mul_(0.1)
            self.phase.weight.mul_(0.1)

    def forward(self, fa: torch.Tensor, fp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.amp_max * torch.sigmoid(self.amp(fa)[:, 0] / self.amp_max)
        return a, math.pi * torch.tanh(self.phase(fp)[:, 0])


def _norm(channels: int) -> nn.Module:
    """BatchNorm (PtychoFormer's decoder). GroupNorm, tried instead, kept both networks on
    the predict-the-mean plateau 2-3x longer in short CPU runs."""
    return nn.BatchNorm2d(channels)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.ReLU())


def _up(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Transposed-convolution block (kernel 4 for stride 2, 3 for stride 1), norm, ReLU."""
    k, p = (4, 1) if stride == 2 else (3, 1)
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, k, stride, p), _norm(cout), nn.ReLU())


def _n_halvings(a: int, b: int) -> int:
    n = int(round(math.log2(a / b)))
    if n < 0 or b * 2**n != a:
        raise ValueError(f"sizes {a} and {b} must differ by a power of two (a >= b)")
    return n


class PtychoNN(nn.Module):
    """PtychoNN-style CNN: 3 conv/pool encoder levels, two conv/upsample decoders."""

    def __init__(self, config: InversionConfig | None = None):
        super().__init__()
        self.config = cfg = config or InversionConfig(model="ptychonn", dim=32)
        n, m = cfg.geometry.frame_size, cfg.geometry.out
        c = [cfg.dim // 2, cfg.dim, 2 * cfg.dim]
        enc, cin = [], 1
        for ch in c:
            enc += [_conv(cin, ch), _conv(ch, ch), nn.MaxPool2d(2)]
            cin = ch
        self.encoder = nn.Sequential(*enc)
        ups = _n_halvings(m, n // 8)

        def decoder() -> nn.Sequential:
            layers, ch = [], c[-1]
            for i in range(max(ups, 1)):
                nxt = c[max(0, len(c) - 2 - i)]
                layers += [_conv(ch, ch), _conv(ch, nxt)]
                if i < ups:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear"))
                ch = nxt
            return nn.Sequential(*layers)

        self.dec_amp, self.dec_phase = decoder(), decoder()
        self.heads = Heads(c[max(0, len(c) - 1 - max(ups, 1))], cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return self.heads(self.dec_amp(z), self.dec_phase(z))


class PPN(nn.Module):
    """Dual-branch PPN: local ViT + non-local PoCA branch, 1x1 fusion, transposed-conv decoder.

    The local branch runs a convolutional stem (``local_stem`` channels, two 3x3 conv/BN/
    ReLU at full resolution) and cuts ``patch x patch`` tokens (learned position embedding,
    standard attention); the non-local branch projects the frame to ``stem`` channels with two 3x3
    convolutions, embeds it with a ``stride x stride`` convolution (no position embedding:
    the polar weighting carries the geometry) and runs PoCA blocks. Local features are
    bilinearly upsampled to the non-local grid, concatenated and fused by a 1x1
    convolution; three transposed-convolution blocks (a shared one, then two per head)
    upsample to ``M x M``.
    """

    def __init__(self, config: InversionConfig | None = None):
        super().__init__()
        self.config = cfg = config or InversionConfig()
        n, m, d = cfg.geometry.frame_size, cfg.geometry.out, cfg.dim
        if n % cfg.patch or n % cfg.nonlocal_stride:
            raise ValueError("frame size must be a multiple of patch and nonlocal_stride")
        gl, gn = n // cfg.patch, n // cfg.nonlocal_stride
        self.grid_local, self.grid_nonlocal = (gl, gl), (gn, gn)
        c1 = int(cfg.local_stem)
        stem = [_conv(1, c1), _conv(c1, c1)] if c1 else []  # built first: the seeded init order
        embed = nn.Conv2d(c1 or 1, d, cfg.patch, cfg.patch)
        # no stem: the bare embedding, so weights saved before the stem existed still load
        self.embed_local = nn.Sequential(*stem, embed) if c1 else embed
        self.pos = nn.Parameter(0.02 * torch.randn(1, gl * gl, d))
        self.local = nn.Sequential(*[Block(d, SelfAttention(d, cfg.heads), cfg.mlp_ratio)
                                     for _ in range(cfg.local_depth)])  # fmt: skip
        s, c0 = cfg.nonlocal_stride, int(cfg.stem)
        stem = [nn.Conv2d(1, c0, 3, padding=1), nn.GELU(), nn.Conv2d(c0, c0, 3, padding=1),
                nn.GELU()] if c0 else []  # fmt: skip
        self.embed_nonlocal = nn.Sequential(*stem, nn.Conv2d(c0 or 1, d, s, s))
        self.nonlocal_blocks = nn.Sequential(*[
            Block(d, PolarAttention(d, cfg.heads, (gn, gn), cfg.radial_log_scale), cfg.mlp_ratio)
            for _ in range(cfg.nonlocal_depth)])  # fmt: skip
        self.norm_local, self.norm_nonlocal = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fuse = nn.Conv2d(2 * d, d, 1)
        ups = _n_halvings(m, gn)
        strides = [2 if i < ups else 1 for i in range(3)]  # three blocks, `ups` of them x2
        self.dec_shared = _up(d, d, strides[0])
        self.dec_amp = nn.Sequential(_up(d, d // 2, strides[1]), _up(d // 2, d // 2, strides[2]))
        self.dec_phase = nn.Sequential(_up(d, d // 2, strides[1]),
                                       _up(d // 2, d // 2, strides[2]))  # fmt: skip
        if ups > 3:
            raise ValueError("the output may be at most 8x the non-local grid")
        self.heads = Heads(d // 2, cfg)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Fused feature map ``(B, dim, N / stride, N / stride)``."""
        b = x.shape[0]
        tl = self.embed_local(x).flatten(2).transpose(1, 2) + self.pos
        tl = self.norm_local(self.local(tl))
        fl = tl.transpose(1, 2).reshape(b, -1, *self.grid_local)
        tn = self.embed_nonlocal(x).flatten(2).transpose(1, 2)
        tn = self.norm_nonlocal(self.nonlocal_blocks(tn))
        fn = tn.transpose(1, 2).reshape(b, -1, *self.grid_nonlocal)
        fl = F.interpolate(fl, size=self.grid_nonlocal, mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([fl, fn], dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.dec_shared(self.features(x))
        return self.heads(self.dec_amp(z), self.dec_phase(z))


def build(config: InversionConfig) -> nn.Module:
    """The network named by ``config.model``."""
    if config.model == "ppn":
        return PPN(config)
    if config.model == "ptychonn":
        return PtychoNN(config)
    raise ValueError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}")


def n_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# --- weights ------------------------------------------------------------------------------
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


#: Committed weight sets: the simulator's default far-field geometry (0.35 N zone plate,
#: generic objects) and the papers' regime (a probe filling 0.9 of the window, IC-like
#: single-material layouts); ``docs/learned.md`` has the commands that made them.
PRESETS: tuple[str, ...] = ("default", "layout")


def default_weights(model: str = "ppn", preset: str = "default") -> Path:
    """Path of the committed ``preset`` weights of ``model`` (``.json`` provenance beside)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown weights preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return WEIGHTS_DIR / f"{model}_{preset}.pt"


def resolve_weights(weights: str | Path | None, model: str = "ppn",
                    frame_size: int | None = None) -> Path:
    """A weights file from a path, a preset name (:data:`PRESETS`) or None (``default``).

    With ``frame_size``, a preset resolves to its set trained on frames of that side when
    one is committed (``{model}_{preset}_{N}.pt``, e.g. ``ppn_default_64.pt``), else to the
    preset's own file (the engine then resamples the frames,
    :mod:`ptytasks.learned.frame_mapping`). A path is taken as it is.
    """
    if weights is None or str(weights) in PRESETS:
        base = default_weights(model, str(weights or "default"))
        sized = base.with_name(f"{base.stem}_{int(frame_size)}.pt") if frame_size else None
        return sized if sized is not None and sized.is_file() else base
    return Path(weights)


def preset_files(weights: str | Path | None, model: str = "ppn") -> list[Path]:
    """Every file ``weights`` may resolve to, whatever the frame size (sorted; existing).

    A preset's own file and its per-frame-size sets: what a fingerprint of "the weights a
    run of this preset reads" must hash, when the frame size is not known there.
    """
    base = resolve_weights(weights, model)
    if not (weights is None or str(weights) in PRESETS):
        return [base]
    sized = [p for p in base.parent.glob(f"{base.stem}_*.pt") if p.stem[len(base.stem) + 1:]
             .isdigit()]  # fmt: skip
    return sorted([base, *sized])


def save_inversion(model: nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``{"config", "state_dict", "meta"}`` (float32) with :func:`torch.save`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.cpu()
             for k, v in model.state_dict().items()}  # fmt: skip
    torch.save({"config": asdict(model.config), "state_dict": state, "meta": meta or {}}, path)
    return path


@torch.no_grad()
def _fold_batchnorm(seq: nn.Sequential) -> None:
    """Fold every eval-mode ``BatchNorm2d`` that follows a (transposed) convolution into it."""
    mods = list(seq)
    for i in range(len(mods) - 1):
        conv, bn = mods[i], mods[i + 1]
        if not isinstance(bn, nn.BatchNorm2d) or not isinstance(conv, (nn.Conv2d,
                                                                        nn.ConvTranspose2d)):
            continue
        if conv.groups != 1:
            continue
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        # Conv2d weights are (out, in, k, k); ConvTranspose2d weights are (in, out, k, k)
        shape = (-1, 1, 1, 1) if isinstance(conv, nn.Conv2d) else (1, -1, 1, 1)
        conv.weight.mul_(scale.reshape(shape))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
        seq[i + 1] = nn.Identity()


@torch.no_grad()
def fast_inference(net: nn.Module) -> nn.Module:
    """Rewrite an eval-mode network into an equal, faster one for inference (in place).

    * Every stride-1 ``ConvTranspose2d`` becomes the equal ``Conv2d``: a stride-1 transposed
      convolution with kernel ``k`` and padding ``p`` is the convolution with the spatially
      flipped, in/out-swapped kernel and padding ``k - 1 - p``; CPU convolutions are much
      faster than transposed ones.
    * Every ``BatchNorm2d`` that follows a convolution is folded into its weights and bias
      (eval mode uses fixed statistics, so the pair is one affine convolution).
    * 4-D weights go to the channels-last layout, oneDNN's fast path for convolutions
      (1.2-1.6x on this CPU; feed channels-last inputs).

    Exact up to float rounding; not for training or for loading state dicts into.
    """
    for mod in list(net.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.ConvTranspose2d) and child.stride == (1, 1) and \
                    child.groups == 1 and child.dilation == (1, 1):
                k, p = child.kernel_size[0], child.padding[0]
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                 padding=k - 1 - p, bias=child.bias is not None)  # fmt: skip
                conv.weight.copy_(child.weight.transpose(0, 1).flip(-1, -2))
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
                setattr(mod, child_name, conv.requires_grad_(child.weight.requires_grad))
    if not net.training:
        for mod in list(net.modules()):
            if isinstance(mod, nn.Sequential):
                _fold_batchnorm(mod)
    return net.to(memory_format=torch.channels_last)


def load_inversion(path: str | Path | None = None, device: str | torch.device = "cpu",
                   model: str = "ppn", fast: bool = True, frame_size: int | None = None
                   ) -> nn.Module:
    """Load weights written by :func:`save_inversion` (default: the committed ``model``'s).

    ``path``: a file, or a preset name (:data:`PRESETS`; with ``frame_size``, its set for
    that frame side when one is committed, :func:`resolve_weights`). Returns the network in
    eval mode with ``requires_grad`` off and ``.meta`` attached; ``fast``: stride-1 transposed
    convolutions become convolutions (:func:`fast_inference`; same outputs, not for loading
    state dicts into).
    """
    path = resolve_weights(path, model, frame_size)
    if not path.is_file():
        raise FileNotFoundError(
            f"single-shot weights {path} not found; train them with "
            "`ptyflow train-learned --model ppn --out <file.pt>`"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = build(InversionConfig.from_dict(blob["config"]))
    net.load_state_dict(blob["state_dict"])
    net.eval().requires_grad_(False)
    if fast:
        fast_inference(net)
    net.meta = dict(blob.get("meta", {}))
    return net.to(device)
