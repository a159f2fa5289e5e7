"""ResidualField: starts at the prior, grid/window/point paths agree, seeded, trainable."""

from __future__ import annotations

import pytest
import torch

from ptytasks.fields import HashEncodingConfig, MLPConfig, ResidualField

pytestmark = pytest.mark.usefixtures("one_thread")


SHAPE = (24, 30)


def prior(shape=SHAPE, seed=0):
    g = torch.Generator().manual_seed(seed)
    amp = 0.5 + torch.rand(shape, generator=g)
    return torch.polar(amp, 3 * torch.rand(shape, generator=g))


def pixel_grid(shape=SHAPE):
    ys, xs = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    return torch.stack([ys, xs], -1).float()


def test_starts_at_prior_and_splits_into_residual():
    p = prior()
    f = ResidualField(SHAPE, p)
    out = f()
    assert out.shape == SHAPE and out.dtype == torch.complex64
    assert float((out - p).detach().abs().max()) < 1e-2
    field, delta = f.field_and_residual()
    torch.testing.assert_close(field, out)
    torch.testing.assert_close(field, p + delta)
    assert float(delta.detach().abs().max()) > 0  # not exactly 0: all parameters get gradients
    field.abs().sum().backward()
    assert all(q.grad is not None and float(q.grad.abs().sum()) > 0 for q in f.parameters())


def test_window_and_points_match_the_grid():
    f = ResidualField(SHAPE, prior(), mlp=dict(out_init_scale=1.0))
    full = f()
    torch.testing.assert_close(f.window(3, 5, 10, 7), full[3:13, 5:12])
    torch.testing.assert_close(f(pixel_grid()), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        f.window(20, 0, 10, 5)


def test_window_where_evaluates_the_network_only_there():
    """``window(..., where=mask)`` (``RNFOptions.eval_region="windows"``): the full field
    where asked, the prior alone elsewhere, and no gradient from the pixels left out."""
    p = prior()
    f = ResidualField(SHAPE, p, mlp=dict(out_init_scale=1.0))
    full = f.window(3, 5, 10, 7)
    where = torch.zeros(10, 7, dtype=torch.bool)
    where[2:6, 1:4] = True
    part, res = f.window(3, 5, 10, 7, return_residual=True, where=where)
    torch.testing.assert_close(part[where], full[where])
    torch.testing.assert_close(part[~where], p[3:13, 5:12][~where])
    assert float(res[~where].abs().max()) == 0 and float(res[where].abs().min()) > 0
    g_part = torch.autograd.grad(part[where].abs().sum(), list(f.parameters()))
    g_full = torch.autograd.grad(full[where].abs().sum(), list(f.parameters()))
    for a, b in zip(g_part, g_full, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_subpixel_points_interpolate_the_prior():
    p = prior()
    f = ResidualField(SHAPE, p, mlp=dict(out_init_scale=0.0))  # the field is the prior
    pts = torch.tensor([[2.5, 3.0], [2.0, 3.25], [40.0, -3.0]])
    expected = torch.stack([(p[2, 3] + p[3, 3]) / 2, 0.75 * p[2, 3] + 0.25 * p[2, 4],
                            p[-1, 0]])
    torch.testing.assert_close(f(pts), expected)


def test_non_residual_ablation_uses_offset_not_prior():
    f = ResidualField(SHAPE, prior(), residual=False)
    assert f.prior is None
    assert float((f() - 1).detach().abs().max()) < 1e-2
    g = ResidualField(SHAPE, None, residual=False, offset=0.5 + 0.5j)
    assert float((g() - (0.5 + 0.5j)).detach().abs().max()) < 1e-2


def test_channels_from_prior_and_explicit():
    p = torch.stack([prior(seed=0), prior(seed=1)])
    f = ResidualField(SHAPE, p)
    assert f().shape == (2, *SHAPE) and f(pixel_grid()[:2, :3]).shape == (2, 3, 2)
    torch.testing.assert_close(f.prior, p)
    g = ResidualField(SHAPE, None, channels=3)
    assert g().shape == (3, *SHAPE)
    with pytest.raises(ValueError):
        ResidualField((10, 10), prior())


def test_seeded_deterministic_and_configurable():
    a, b = ResidualField(SHAPE, prior(), seed=7), ResidualField(SHAPE, prior(), seed=7)
    c = ResidualField(SHAPE, prior(), seed=8)
    assert torch.equal(a(), b()) and not torch.equal(a(), c())
    grads = []
    for _ in range(2):
        a.zero_grad()
        a().abs().square().sum().backward()
        grads.append([q.grad.clone() for q in a.parameters()])
    assert all(torch.equal(x, y) for x, y in zip(*grads, strict=True))
    d = ResidualField(SHAPE, prior(), encoding=HashEncodingConfig(level_policy="paper"),
                      mlp=MLPConfig(activation="crelu", hidden_features=16), chunk_size=100)
    assert d.encoding.out_dim == 32 and d().shape == SHAPE
    with pytest.raises(ValueError):
        ResidualField(SHAPE, prior(), mlp=dict(bogus=1))


def test_chunked_checkpointed_and_float64():
    f = ResidualField(SHAPE, prior(), mlp=dict(out_init_scale=1.0)).double()
    assert f().dtype == torch.complex128
    ref = f()
    f.chunk_size, f.checkpoint = 97, True
    torch.testing.assert_close(f(), ref)
    assert f(pixel_grid().double()).dtype == torch.complex128


def test_fits_a_residual():
    """A few Adam steps bring the field to a structured target (prior + disk of phase)."""
    shape = (32, 32)
    p = torch.ones(shape, dtype=torch.complex64)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    target = torch.polar(torch.ones(shape), 0.8 * ((ys - 14) ** 2 + (xs - 18) ** 2 < 64).float())
    f = ResidualField(shape, p, seed=0)
    opt = torch.optim.AdamW(f.parameters(), lr=1e-2, weight_decay=1e-5)
    first = None
    for _ in range(60):
        loss = (f() - target).abs().square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 50


def test_a_float64_prior_keeps_its_precision_at_points_and_on_the_grid():
    """A real float64 prior is not rounded to complex64, and the point path takes a
    float64 prior on a float32 module (grid_sample refused the mixed types)."""
    import torch

    from ptytasks.fields import ResidualField

    prior = torch.randn(16, 20, dtype=torch.float64)
    f = ResidualField((16, 20), prior)
    assert f.prior_split.dtype == torch.float64
    out = f(torch.tensor([[3.5, 4.25]]))
    assert torch.isfinite(torch.view_as_real(out)).all()
