"""Hash encoding: level layout, agreement with a naive reference, fast paths, gradients."""

from __future__ import annotations

import pytest
import torch

from ptytasks.fields.hash_encoding import (
    PRIME_Y,
    HashEncoding2D,
    HashEncodingConfig,
    level_resolutions,
    pixel_to_unit,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_encode(enc: HashEncoding2D, coords: torch.Tensor) -> torch.Tensor:
    """Straightforward per-level, per-corner reference: ``(P, 2)`` unit coords -> ``(P, D)``."""
    out = []
    for n, dense, table in zip(enc.resolutions, enc.dense, enc.tables, strict=True):
        pos = coords.clamp(0, 1) * n
        i0 = pos.floor().clamp(max=n - 1)
        w = pos - i0
        i0 = i0.long()
        acc = 0
        for dy in (0, 1):
            for dx in (0, 1):
                yi, xi = i0[:, 0] + dy, i0[:, 1] + dx
                wy = w[:, 0] if dy else 1 - w[:, 0]
                wx = w[:, 1] if dx else 1 - w[:, 1]
                if dense:
                    v = table[:, yi, xi]
                else:
                    v = table[:, (xi ^ (yi * PRIME_Y)) % enc.table_size]
                acc = acc + v * (wy * wx)
        out.append(acc.T)
    return torch.cat(out, -1)


def small_encoding(policy="paper", shape=(40, 56), seed=0):
    # a small table (2^8) so that this small grid has dense *and* hashed levels
    cfg = HashEncodingConfig(n_levels=8, log2_table_size=8, base_resolution=4,
                             per_level_scale=1.6, level_policy=policy, init_scale=1.0)
    return HashEncoding2D(cfg, shape, seed=seed)


def test_paper_levels():
    res = level_resolutions(HashEncodingConfig())
    assert res[:3] == [16, 24, 36] and res[-1] == 7006 and len(res) == 16
    enc = HashEncoding2D(level_policy="paper")
    assert enc.out_dim == 32
    assert enc.dense == [True] * 10 + [False] * 6  # (615 + 1)^2 <= 2^19 < (922 + 1)^2
    assert tuple(enc.tables[-1].shape) == (2, 2**19)
    assert all(float(t.detach().abs().max()) <= 1e-4 for t in enc.tables)


def test_cap_policy_stops_at_pixel_pitch():
    assert level_resolutions(HashEncodingConfig(), (512, 512)) == [
        16, 24, 36, 54, 81, 121, 182, 273, 410, 511]
    assert level_resolutions(HashEncodingConfig(), (256, 200))[-2:] == [182, 255]
    assert level_resolutions(HashEncodingConfig(), (8, 8)) == [7]
    assert len(level_resolutions(HashEncodingConfig(level_policy="paper"), (64, 64))) == 16
    with pytest.raises(ValueError):
        level_resolutions(HashEncodingConfig(level_policy="bogus"), (64, 64))


def test_pixel_to_unit_is_isotropic():
    u = pixel_to_unit(torch.tensor([[39.0, 55.0], [0.0, 11.0]]), (40, 56))
    assert torch.allclose(u, torch.tensor([[39 / 55, 1.0], [0.0, 11 / 55]]))


@pytest.mark.parametrize("policy", ["paper", "cap"])
def test_points_match_naive_reference(policy):
    enc = small_encoding(policy)
    if policy == "paper":
        assert any(enc.dense) and not all(enc.dense)
    coords = torch.rand(500, 2, generator=torch.Generator().manual_seed(1))
    coords[:5] = torch.tensor([[0, 0], [1, 1], [0, 1], [1.2, -0.3], [0.5, 0.5]])
    ours = enc(coords)
    ref = naive_encode(enc, coords)
    assert ours.shape == (500, enc.out_dim)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("policy", ["paper", "cap"])
def test_grid_path_matches_points_and_gradients(policy):
    shape = (40, 56)
    enc = small_encoding(policy, shape)
    ys = pixel_to_unit(torch.arange(shape[0], dtype=torch.float32), shape)
    xs = pixel_to_unit(torch.arange(shape[1], dtype=torch.float32), shape)
    grid = enc.encode_grid(ys, xs)
    assert grid.shape == (enc.out_dim, *shape)
    pts = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    ref = naive_encode(enc, pts)
    torch.testing.assert_close(grid.reshape(enc.out_dim, -1).T, ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(enc.encode_pixels(), grid)

    weights = torch.randn(enc.out_dim, *shape, generator=torch.Generator().manual_seed(2))
    g_fast = torch.autograd.grad((grid * weights).sum(), list(enc.tables))
    ref_grid = naive_encode(enc, pts).T.reshape(enc.out_dim, *shape)
    g_ref = torch.autograd.grad((ref_grid * weights).sum(), list(enc.tables))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    g_pts = torch.autograd.grad((enc(pts).T.reshape(enc.out_dim, *shape) * weights).sum(),
                                list(enc.tables))
    for a, b in zip(g_pts, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_fractional_subgrid():
    enc = small_encoding("paper")
    ys = torch.tensor([0.1, 0.33, 0.9])
    xs = torch.tensor([0.0, 0.25, 0.71, 1.0])
    grid = enc.encode_grid(ys, xs)
    pts = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    torch.testing.assert_close(grid.reshape(enc.out_dim, -1).T, naive_encode(enc, pts),
                               atol=2e-5, rtol=1e-5)


def test_seeded_and_leading_dims():
    a, b, c = small_encoding(seed=3), small_encoding(seed=3), small_encoding(seed=4)
    state = torch.get_rng_state()
    _ = small_encoding(seed=5)
    assert torch.equal(state, torch.get_rng_state())  # private generator
    for ta, tb in zip(a.tables, b.tables, strict=True):
        assert torch.equal(ta, tb)
    assert not torch.equal(a.tables[0], c.tables[0])
    coords = torch.rand(3, 4, 2)
    assert a(coords).shape == (3, 4, a.out_dim)


def test_float64():
    enc = small_encoding().double()
    out = enc.encode_pixels()
    assert out.dtype == torch.float64
    coords = torch.rand(7, 2, dtype=torch.float64)
    torch.testing.assert_close(enc(coords), naive_encode(enc, coords))
