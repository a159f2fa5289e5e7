"""Haar transform vs PyWavelets (signs, ordering, odd sizes, levels), complex, inverse."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from ptytasks.fields.haar import haar2d, haar_wavedec2, ihaar2d


@pytest.mark.parametrize("shape", [(8, 12), (7, 9), (1, 6), (16, 16)])
def test_single_level_matches_pywt(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    ca, (ch, cv, cd) = pywt.dwt2(x, "haar")
    ta, (th, tv, td) = haar2d(torch.from_numpy(x))
    for ours, ref in ((ta, ca), (th, ch), (tv, cv), (td, cd)):
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(32, 24), (30, 21)])
def test_multilevel_matches_wavedec2_float32(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ref = pywt.wavedec2(x, "haar", level=3)
    ours = haar_wavedec2(torch.from_numpy(x), 3)
    assert len(ours) == len(ref) == 4
    np.testing.assert_allclose(ours[0].numpy(), ref[0], atol=1e-5)
    for det, rdet in zip(ours[1:], ref[1:], strict=True):
        for a, b in zip(det, rdet, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a.numpy(), b, atol=1e-5)


def test_complex_batch_inverse_and_energy():
    g = torch.Generator().manual_seed(0)
    z = torch.complex(torch.randn(3, 10, 14, generator=g, dtype=torch.float64),
                      torch.randn(3, 10, 14, generator=g, dtype=torch.float64))
    ca, det = haar2d(z)
    ra, rdet = haar2d(z.real)
    ia, idet = haar2d(z.imag)
    torch.testing.assert_close(ca, torch.complex(ra, ia))
    for d, r, i in zip(det, rdet, idet, strict=True):
        torch.testing.assert_close(d, torch.complex(r, i))
    torch.testing.assert_close(ihaar2d(ca, det), z)
    energy = sum(float(b.abs().square().sum()) for b in (ca, *det))
    assert energy == pytest.approx(float(z.abs().square().sum()), rel=1e-12)
    with pytest.raises(ValueError):
        haar_wavedec2(z, 0)
