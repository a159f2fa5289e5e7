"""Data-fidelity terms and the wavelet-sparsity prior of the RNF engine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptytasks.engines.losses import (
    DATA_LOSSES,
    data_loss,
    gradient_loss,
    wavelet_l1,
    wavelet_sparsity,
)
from ptytasks.fields.haar import haar2d


def frames(seed=0, shape=(3, 8, 10)):
    g = torch.Generator().manual_seed(seed)
    meas = torch.poisson(50 * torch.rand(shape, generator=g, dtype=torch.float64), generator=g)
    pred = 50 * torch.rand(shape, generator=g, dtype=torch.float64)
    return pred, meas


def test_pointwise_losses_match_formulas():
    pred, meas = frames()
    a, b = torch.sqrt(pred + 1e-8), torch.sqrt(meas + 1e-8)
    cases = {
        ("l1", "amplitude"): (a - b).abs().mean(),
        ("l2", "amplitude"): (a - b).square().mean(),
        ("l1", "intensity"): (pred - meas).abs().mean(),
        ("huber", "amplitude"): F.huber_loss(a, b, delta=0.5),
        ("smooth_l1", "intensity"): F.smooth_l1_loss(pred, meas, beta=2.0),
        ("poisson", "intensity"): (pred - meas + torch.xlogy(meas, meas + 1e-8)
                                   - torch.xlogy(meas, pred + 1e-8)).mean(),
    }
    for (name, domain), expected in cases.items():
        delta = 2.0 if name == "smooth_l1" else 0.5
        got = data_loss(name, domain, delta=delta)(pred, meas)
        torch.testing.assert_close(got, expected)


def test_all_losses_zero_at_the_data_and_differentiable():
    _, meas = frames()
    for name in DATA_LOSSES:
        domain = "intensity" if name == "poisson" else "amplitude"
        loss = data_loss(name, domain)
        assert float(loss(meas, meas)) == pytest.approx(0.0, abs=1e-9)
        pred = (meas + 3.0).requires_grad_(True)
        value = loss(pred, meas)
        value.backward()
        assert value.item() > 0 and torch.isfinite(pred.grad).all()
    # Poisson: the minimum over a constant scale is at I = J
    scales = torch.linspace(0.5, 1.5, 21, dtype=torch.float64)
    pl = data_loss("poisson", "intensity")
    values = torch.stack([pl(meas * s + 1e-3, meas) for s in scales])
    assert int(values.argmin()) == 10


def test_gradient_loss_ignores_offsets_and_matches_definition():
    pred, meas = frames()
    loss = data_loss("gradient", "intensity")
    offset = torch.tensor([5.0, -2.0, 11.0], dtype=torch.float64)[:, None, None]
    assert float(loss(meas + offset, meas)) == pytest.approx(0.0, abs=1e-12)
    expected = ((torch.diff(pred, dim=-2) - torch.diff(meas, dim=-2)).abs().mean()
                + (torch.diff(pred, dim=-1) - torch.diff(meas, dim=-1)).abs().mean())
    torch.testing.assert_close(loss(pred, meas), expected)
    torch.testing.assert_close(gradient_loss(pred, meas), expected)


def test_mask_and_reductions():
    pred, meas = frames()
    mask = torch.ones(8, 10, dtype=torch.bool)
    mask[2, 3] = False
    polluted = pred.clone()
    polluted[:, 2, 3] = 1e6  # a hot pixel the mask must hide
    for name in ("l1", "gradient"):
        loss = data_loss(name, "amplitude")
        clean_pred = pred.clone()
        clean_pred[:, 2, 3] = meas[:, 2, 3]
        masked = loss(polluted, meas, mask)
        assert float(masked) < 2 * float(loss(clean_pred, meas))
    per_frame = data_loss("l2", "intensity", reduction="none")(pred, meas)
    assert per_frame.shape == (3,)
    torch.testing.assert_close(per_frame, (pred - meas).square().mean((-2, -1)))
    total = data_loss("l2", "intensity", reduction="sum")(pred, meas)
    torch.testing.assert_close(total, (pred - meas).square().sum((-2, -1)).mean())


def test_factory_errors():
    with pytest.raises(ValueError):
        data_loss("poisson", "amplitude")
    with pytest.raises(ValueError):
        data_loss("l3")
    with pytest.raises(ValueError):
        data_loss("l1", "phase")
    with pytest.raises(ValueError):
        data_loss("l1", reduction="max")(*frames())


def test_wavelet_sparsity_value_and_properties():
    g = torch.Generator().manual_seed(3)
    z = torch.complex(torch.randn(16, 12, generator=g), torch.randn(16, 12, generator=g))
    _, (h, v, d) = haar2d(z)
    expected = 0.1 * (h.abs().sum() + v.abs().sum() + d.abs().sum()) / z.numel()
    torch.testing.assert_close(wavelet_sparsity(z), expected)
    # a constant (flat) field has no detail coefficients; a global phase changes nothing
    assert float(wavelet_sparsity(torch.full((8, 8), 0.3 + 0.9j))) == 0.0
    torch.testing.assert_close(wavelet_sparsity(z * (0.6 + 0.8j)), wavelet_sparsity(z))
    # options: |Re| + |Im|, approximation band, levels, mu
    reim = (torch.view_as_real(h).abs().sum() + torch.view_as_real(v).abs().sum()
            + torch.view_as_real(d).abs().sum())
    torch.testing.assert_close(wavelet_l1(z, norm="reim"), reim)
    assert float(wavelet_l1(z, include_approx=True)) > float(wavelet_l1(z))
    assert float(wavelet_l1(z, levels=2)) > float(wavelet_l1(z))
    torch.testing.assert_close(wavelet_sparsity(z, mu=1.0), 10 * wavelet_sparsity(z))
    # finite gradient at zero (|c| has a kink there)
    zero = torch.zeros(8, 8, dtype=torch.complex64, requires_grad=True)
    wavelet_sparsity(zero).backward()
    assert torch.isfinite(torch.view_as_real(zero.grad)).all()
    with pytest.raises(ValueError):
        wavelet_l1(z, norm="l2")


def test_spun_wavelet_term_sees_the_pairs_across_the_blocks():
    """One decimated Haar level misses an edge on a block boundary (columns 1 | 2: no
    2 x 2 block straddles it) and sees one inside a block (columns 2 | 3); the cycle-spun
    term sees both alike."""
    on_boundary = torch.zeros(8, 8, dtype=torch.complex64)
    on_boundary[:, 2:] = 1.0
    inside = torch.zeros(8, 8, dtype=torch.complex64)
    inside[:, 3:] = 1.0
    assert float(wavelet_sparsity(on_boundary)) == 0.0
    assert float(wavelet_sparsity(inside)) > 0.0
    spun_b = wavelet_sparsity(on_boundary, spin=True)
    spun_i = wavelet_sparsity(inside, spin=True)
    assert float(spun_b) > 0.0
    torch.testing.assert_close(spun_b, spun_i)
    # the mean of the four shifts: a flat field still costs nothing
    assert float(wavelet_sparsity(torch.full((9, 7), 0.3 + 0.9j), spin=True)) == 0.0
