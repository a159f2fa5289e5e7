"""DnCNN with real spectral normalisation (RealSN): a denoiser with a Lipschitz-bounded residual.

DnCNN (Zhang et al. 2017) predicts the noise ``R(x)`` of an image; the denoiser is the
residual form ``D = Id - R``. PINE (Yamada et al. 2024) trains it with RealSN (Ryu et al.
2019, ICML): after every optimiser step each convolution is divided by its operator norm
(when that exceeds the layer's target), so that with 1-Lipschitz ReLUs the whole network
``R`` is ``prod_l target_l``-Lipschitz (default 1: nonexpansive).

"RealSN" means the spectral norm of the *convolution operator*, not of the kernel reshaped
to a ``C_out x C_in k^2`` matrix (which neither bounds nor equals it). It is estimated by
power iteration with the convolution itself: ``u <- A^T A u``, where ``A`` is
``conv2d(., W, padding)`` on a ``(C_in, H, W)`` input and ``A^T`` is ``conv_transpose2d``
with the same weight and padding (the exact adjoint). During training one iteration per
step continues from a persistent vector (Ryu et al.'s scheme); :func:`finalize_lipschitz`
converges it and :func:`symbol_norm` gives the size-independent norm from the kernel's
frequency response (the supremum over all image sizes, on a fine frequency grid).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DnCNNConfig:
    """Architecture of :class:`DnCNN`.

    Attributes
    ----------
    depth : int
        Convolution layers (the paper's DnCNN: 17).
    features : int
        Channels of the hidden layers (the paper: 64).
    kernel : int
        Odd kernel side.
    bias : bool
        Biases in the convolutions (they do not change the Lipschitz constant).
    lipschitz : float
        Target Lipschitz constant of the residual network ``R``; each of the ``depth``
        layers is held to ``lipschitz ** (1 / depth)``.
    init : {"dirac", "kaiming"}
        Hidden-layer initialisation: near-identity kernels (trains much faster under the
        per-layer norm constraint) or He-normal.
    activation : {"relu", "maxmin"}
        ReLU (DnCNN, the paper) or MaxMin (:func:`maxmin`; needs an even ``features``).
    bias_init : float
        Initial bias of all but the last layer. A positive bias keeps the ReLUs in their
        linear range at first, so the norm-limited network can pass (high-pass) noise with
        gain near 1 from the start instead of halving it at every ReLU.
    """

    depth: int = 8
    features: int = 32
    kernel: int = 3
    bias: bool = True
    lipschitz: float = 1.0
    init: str = "dirac"
    bias_init: float = 0.0
    activation: str = "relu"

    @classmethod
    def paper(cls) -> DnCNNConfig:
        """The paper's DnCNN-17 with 64 features (needs a GPU to train in hours)."""
        return cls(depth=17, features=64)

    @property
    def layer_target(self) -> float:
        return float(self.lipschitz) ** (1.0 / self.depth)


class DnCNN(nn.Module):
    """Conv-ReLU stack without batch normalisation; ``forward`` returns the noise ``R(x)``.

    Input and output are ``(batch, 1, y, x)`` real images; ``denoise(x) = x - R(x)``.
    """

    def __init__(self, config: DnCNNConfig | None = None):
        super().__init__()
        self.config = cfg = config or DnCNNConfig()
        if cfg.depth < 2:
            raise ValueError("DnCNN needs depth >= 2")
        chans = [1] + [cfg.features] * (cfg.depth - 1) + [1]
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], cfg.kernel, padding=cfg.kernel // 2, bias=cfg.bias)
            for i in range(cfg.depth)
        )
        for i, conv in enumerate(self.convs):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            if 0 < i < cfg.depth - 1 and cfg.init == "dirac":
                # Hidden layers start as the identity (plus a little noise): the ReLUs pass
                # the first layer's nonnegative output unchanged, so the normalised deep
                # network starts as a well-conditioned shallow one instead of attenuating
                # its signal by the typical (not the worst-case) gain of every layer.
                with torch.no_grad():
                    conv.weight.mul_(0.05)
                    conv.weight.add_(nn.init.dirac_(torch.empty_like(conv.weight)))
            if conv.bias is not None:
                nn.init.constant_(conv.bias, cfg.bias_init if i < cfg.depth - 1 else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = maxmin if self.config.activation == "maxmin" else F.relu
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = act(x)
        return x

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """``D(x) = x - R(x)`` (the paper's ``D-hat``)."""
        return x - self(x)


def maxmin(x: torch.Tensor) -> torch.Tensor:
    """MaxMin (GroupSort of pairs, Anil et al. 2019): channels ``(a, b) -> (max, min)``.

    1-Lipschitz like ReLU, but norm-preserving: under a per-layer norm bound a ReLU
    network loses gain at every layer, while MaxMin can pass a signal through unchanged.
    """
    a, b = x.chunk(2, dim=1)
    return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


# --- operator norms -----------------------------------------------------------------------
def _pad(conv: nn.Conv2d) -> int:
    p = conv.padding
    return int(p[0] if isinstance(p, tuple) else p)


def conv_power_iteration(
    weight: torch.Tensor, u: torch.Tensor, n_iter: int = 1, padding: int = 1
) -> tuple[float, torch.Tensor]:
    """Power iteration for ``||A||`` of ``A = conv2d(., weight, padding)`` on ``u``'s shape.

    Parameters
    ----------
    weight : ``(C_out, C_in, k, k)``
    u : ``(1, C_in, H, W)``
        Start vector (a persistent one continues an earlier estimate).
    n_iter : int
    padding : int

    Returns
    -------
    (sigma, u) : the estimate ``||A u||`` for the final unit ``u`` (a lower bound that
    converges to the norm), and that ``u`` to continue from.
    """
    w = weight.detach()
    u = u / (u.norm() + 1e-30)
    for _ in range(max(1, int(n_iter))):
        v = F.conv2d(u, w, padding=padding)
        u = F.conv_transpose2d(v, w, padding=padding)
        u = u / (u.norm() + 1e-30)
    sigma = float(F.conv2d(u, w, padding=padding).norm())
    return sigma, u


def symbol_norm(weight: torch.Tensor, grid: int = 64) -> float:
    """``max_k ||W_hat(k)||_2`` over a ``grid x grid`` frequency grid.

    ``W_hat(k)`` is the ``C_out x C_in`` frequency response of the kernel. This is the
    exact norm of the circular convolution on ``grid x grid`` images; the zero-padded
    convolution on any image size is a restriction of the infinite convolution, whose
    norm is the supremum over continuous frequencies, which a fine grid approaches from
    below (for a 3x3 kernel the response is a degree-1 trigonometric polynomial per axis).
    """
    w = weight.detach().to(torch.float64)
    spec = torch.fft.fft2(w, s=(grid, grid))  # (C_out, C_in, g, g)
    mats = spec.permute(2, 3, 0, 1).reshape(-1, w.shape[0], w.shape[1])
    return float(torch.linalg.matrix_norm(mats, ord=2).max())


class RealSN:
    """Keeps every convolution of a :class:`DnCNN` at operator norm ``<= target``.

    Call :meth:`normalize_` after each optimiser step: one power iteration per layer
    continues from a persistent vector on ``input_size`` images, and a layer whose
    estimated norm exceeds its target is divided by ``norm / target``.

    Parameters
    ----------
    model : DnCNN
    input_size : (int, int)
        Image size of the power iteration (the training patch size).
    n_iter : int
        Power iterations per call.
    seed : int
    """

    def __init__(self, model: DnCNN, input_size: tuple[int, int] = (48, 48), n_iter: int = 1,
                 seed: int = 0):
        self.model, self.n_iter = model, int(n_iter)
        self.target = model.config.layer_target
        g = torch.Generator().manual_seed(int(seed))
        dev = next(model.parameters()).device
        self.u = [
            torch.randn((1, c.in_channels, *input_size), generator=g).to(dev)
            for c in model.convs
        ]
        self.sigmas = [float("nan")] * len(model.convs)

    @torch.no_grad()
    def normalize_(self) -> list[float]:
        """Normalise in place; returns the per-layer norm estimates before scaling."""
        for i, conv in enumerate(self.model.convs):
            s, self.u[i] = conv_power_iteration(conv.weight, self.u[i], self.n_iter, _pad(conv))
            self.sigmas[i] = s
            if s > self.target:
                conv.weight.mul_(self.target / s)
        return list(self.sigmas)


@torch.no_grad()
def layer_norms(model: DnCNN, size: tuple[int, int] = (64, 64), n_iter: int = 200,
                seed: int = 0) -> list[float]:
    """Converged operator norm of each convolution on ``size`` images (power iteration)."""
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for conv in model.convs:
        w = conv.weight.detach().float().cpu()
        u = torch.randn((1, conv.in_channels, *size), generator=g)
        s, _ = conv_power_iteration(w, u, n_iter, _pad(conv))
        out.append(s)
    return out


@torch.no_grad()
def finalize_lipschitz(model: DnCNN, *, grid: int = 64, margin: float = 1e-3) -> dict:
    """Scale layers so each frequency-response norm is ``<= target (1 - margin)``.

    Run once after training: the training-time estimates lag a step behind the weights.
    Returns the per-layer norms after scaling and the resulting bound on ``Lip(R)``.
    """
    target = model.config.layer_target * (1 - margin)
    norms = []
    for conv in model.convs:
        s = symbol_norm(conv.weight, grid)
        if s > target:
            conv.weight.mul_(target / s)
            s = symbol_norm(conv.weight, grid)
        norms.append(s)
    return {"layer_norms": norms, "lipschitz_bound": math.prod(norms)}


def lipschitz_bound(model: DnCNN, grid: int = 64) -> float:
    """``prod_l ||conv_l||`` (frequency-response norms): a bound on ``Lip(R)``."""
    return math.prod(symbol_norm(c.weight, grid) for c in model.convs)


# --- complex objects, saving and loading --------------------------------------------------
def residual_complex(model: DnCNN, obj: torch.Tensor) -> torch.Tensor:
    """``R`` applied to the real and imaginary parts of a complex ``(y, x)`` image.

    Returns the complex residual ``R(Re O) + i R(Im O)``, in ``obj``'s dtype and device;
    the denoised object is ``obj - residual_complex(model, obj)`` (the paper's eq. 22).
    """
    p = next(model.parameters())
    x = torch.stack([obj.real, obj.imag])[:, None].to(device=p.device, dtype=p.dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        r = model(x)[:, 0]
    return torch.complex(r[0], r[1]).to(device=obj.device, dtype=obj.dtype)


def save_denoiser(model: DnCNN, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``{"config", "state_dict", "meta"}`` (float32 weights) with :func:`torch.save`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"config": asdict(model.config), "state_dict": state, "meta": meta or {}}, path)
    return path


def load_denoiser(path: str | Path | None = None, device: str | torch.device = "cpu") -> DnCNN:
    """Load weights written by :func:`save_denoiser`; default: the committed default weights.

    The model is returned in eval mode with ``requires_grad`` off (call
    ``model.requires_grad_(True)`` to fine-tune it).
    """
    if path is None:
        from ptytasks.learned import DEFAULT_WEIGHTS

        path = DEFAULT_WEIGHTS
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"denoiser weights {path} not found; train them with "
            "`python -m ptytasks.learned.train_denoiser --out <file.pt>`"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = DnCNN(DnCNNConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval().requires_grad_(False)  # inference: no parameter graphs
    model.meta = dict(blob.get("meta", {}))
    return model.to(device=device).to(memory_format=torch.channels_last)


# --- empirical Lipschitz checks -------------------------------------------------------------
@torch.no_grad()
def pair_ratios(fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||fn(x_i) - fn(y_i)|| / ||x_i - y_i||`` per batch item of ``(b, 1, h, w)`` pairs."""
    num = (fn(x) - fn(y)).flatten(1).norm(dim=1)
    den = (x - y).flatten(1).norm(dim=1)
    return num / den


def jacobian_norm(fn, x: torch.Tensor, n_iter: int = 30, seed: int = 0) -> float:
    """Local Lipschitz constant ``||J_fn(x)||_2`` at one image ``x`` ``(1, 1, h, w)``.

    Power iteration on ``J^T J`` with a forward-mode product (``J v``) and a reverse-mode
    one (``J^T w``); the estimate converges from below.
    """
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(x.shape, generator=g).to(x)
    v = v / v.norm()
    x = x.detach()
    sigma = 0.0
    for _ in range(int(n_iter)):
        xr = x.clone().requires_grad_(True)
        out = fn(xr)
        jv = torch.func.jvp(fn, (x,), (v,))[1].detach()
        sigma = float(jv.norm())
        (jtjv,) = torch.autograd.grad(out, xr, grad_outputs=jv)
        v = jtjv.detach() / (jtjv.detach().norm() + 1e-30)
    return sigma
