"""The committed default denoiser: provenance, size, denoising, and the Lipschitz conditions.

What the convergence argument needs (Yamada et al. 2024, sec. 3.2 and 4.2): HSD converges
for a *nonexpansive* operator ``G = D``; the paper obtains it "by constraining DnCNN to be
nonexpansive" with RealSN, i.e. it bounds the residual ``R = DnCNN`` (``Lip(R) <= 1``),
which certifies only ``Lip(D) = Lip(Id - R) <= 2``. So the tests check

* the certified bound: ``Lip(R) <= prod_l ||conv_l|| <= 1`` (per-layer operator norms from
  the kernels' frequency responses, valid for every image size);
* empirically, that ``D`` itself is nonexpansive: difference ratios on random pairs and on
  pairs near natural images, and the Jacobian norm ``||J_D||`` at natural images (power
  iteration), all ``<= 1`` up to float tolerance; and the relaxed step
  ``T = (1 - rho) Id + rho D`` likewise.

Measured on the committed weights are printed (``pytest -s``) and listed in the JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptytasks.learned import DEFAULT_WEIGHTS
from ptytasks.learned.dncnn import jacobian_norm, lipschitz_bound, load_denoiser, pair_ratios
from ptytasks.learned.synthetic import SIGMA, add_noise
from ptytasks.simulate.objects import image

pytestmark = [
    pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no default weights"),
    pytest.mark.usefixtures("one_thread"),
]
TOL = 1e-3  # float32 arithmetic and power-iteration convergence


@pytest.fixture(scope="module")
def net():
    return load_denoiser().float().to(memory_format=torch.contiguous_format)


@pytest.fixture(scope="module")
def natural():
    kinds = ("camera", "moon", "brick")
    clean = np.stack([image(k, (64, 64)) for k in kinds]).astype(np.float32)
    noisy = add_noise(clean, SIGMA, np.random.default_rng(0))
    return torch.from_numpy(clean)[:, None], torch.from_numpy(noisy)[:, None]


def test_provenance_and_size():
    assert DEFAULT_WEIGHTS.stat().st_size < 2 * 2**20
    rec = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert rec["command"].startswith("python -m ptytasks.learned.train_denoiser")
    assert isinstance(rec["seed"], int) and rec["train_seconds"] > 0
    assert rec["lipschitz"]["R_symbol_bound"] <= 1.0


def test_certified_residual_bound(net):
    bound = lipschitz_bound(net, grid=64)
    print(f"certified Lip(R) <= {bound:.5f}")
    assert bound <= 1.0


def test_random_pairs(net):
    g = torch.Generator().manual_seed(1)
    x = torch.rand((16, 1, 48, 48), generator=g)
    y = torch.rand((16, 1, 48, 48), generator=g)
    near = x + 0.02 * torch.randn(x.shape, generator=g)
    rho = 0.49
    t = lambda z: (1 - rho) * z + rho * net.denoise(z)
    for name, fn in (("R", net), ("D", net.denoise), ("T", t)):
        r = torch.cat([pair_ratios(fn, x, y), pair_ratios(fn, x, near)])
        print(f"random pairs: max Lip ratio {name} {float(r.max()):.4f}")
        assert float(r.max()) <= 1 + TOL


def test_near_natural_images(net, natural):
    _, noisy = natural
    g = torch.Generator().manual_seed(2)
    worst = {"R": 0.0, "D": 0.0}
    for scale in (1e-3, 1e-2, 1e-1):
        pert = noisy + scale * torch.randn(noisy.shape, generator=g)
        worst["R"] = max(worst["R"], float(pair_ratios(net, noisy, pert).max()))
        worst["D"] = max(worst["D"], float(pair_ratios(net.denoise, noisy, pert).max()))
    jac = [jacobian_norm(net.denoise, noisy[i:i + 1], n_iter=12, seed=i)
           for i in range(len(noisy))]
    print(f"near natural images: max ratio R {worst['R']:.4f}, D {worst['D']:.4f}; "
          f"||J_D|| {np.round(jac, 4)}")
    assert worst["R"] <= 1 + TOL and worst["D"] <= 1 + TOL
    assert max(jac) <= 1 + 1e-2


def test_denoises_natural_images(net, natural):
    clean, noisy = natural
    with torch.no_grad():
        den = net.denoise(noisy)
    psnr = lambda a: float(10 * torch.log10(1 / torch.mean((a - clean) ** 2)))
    print(f"PSNR noisy {psnr(noisy):.2f} dB -> denoised {psnr(den):.2f} dB")
    assert psnr(den) > psnr(noisy) + 0.5
