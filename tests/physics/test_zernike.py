"""Zernike polynomials: Noll indexing and orthonormality (ptytasks.physics.zernike)."""

from __future__ import annotations

import math

import pytest
import torch

from ptytasks.physics.zernike import disk, nm_to_noll, noll_to_nm, pupil, zernike_basis

NOLL_TABLE = {  # Noll (1976), Table 1
    1: (0, 0), 2: (1, 1), 3: (1, -1), 4: (2, 0), 5: (2, -2), 6: (2, 2), 7: (3, -1),
    8: (3, 1), 9: (3, -3), 10: (3, 3), 11: (4, 0), 12: (4, 2), 13: (4, -2), 14: (4, 4),
    15: (4, -4), 22: (6, 0),
}


def test_noll_table_and_inverse():
    for j, nm in NOLL_TABLE.items():
        assert noll_to_nm(j) == nm
    for j in range(1, 80):
        assert nm_to_noll(*noll_to_nm(j)) == j
    with pytest.raises(ValueError):
        noll_to_nm(0)
    with pytest.raises(ValueError):
        nm_to_noll(3, 2)


def test_orthonormal_on_unit_disk():
    r = 256  # half-pixel-centred grid: the disk edge error is ~1/r
    shape = (2 * r, 2 * r)
    centre = (r - 0.5, r - 0.5)
    b = zernike_basis(shape, r, 15, center=centre, dtype=torch.float64)
    inside = disk(shape, r, center=centre, dtype=torch.float64)
    assert b.shape == (15, 2 * r, 2 * r)
    assert (b * (1 - inside)).abs().max() == 0  # zero outside the disk
    flat = b.reshape(15, -1)
    gram = flat @ flat.T / inside.sum()
    err = float((gram - torch.eye(15, dtype=torch.float64)).abs().max())
    assert err < 1e-3, f"Zernike Gram matrix deviates by {err:.2e}"


def test_known_values():
    b = zernike_basis((65, 65), 32, [1, 2, 4, 11], dtype=torch.float64)
    assert torch.allclose(b[0][32, 32], torch.tensor(1.0, dtype=torch.float64))
    assert b[2][32, 32] == pytest.approx(-math.sqrt(3))  # defocus sqrt(3)(2 rho^2 - 1)
    assert b[2][32, 64] == pytest.approx(math.sqrt(3))  # rho = 1 on the x axis
    assert b[1][32, 64] == pytest.approx(2.0)  # tilt x: 2 rho cos(theta)
    assert b[1][64, 32] == pytest.approx(0.0, abs=1e-12)
    assert b[3][32, 32] == pytest.approx(math.sqrt(5))  # spherical sqrt(5)(6r^4-6r^2+1)


def test_pupil_function():
    b = zernike_basis((32, 32), 12, 6, dtype=torch.float64)
    a = disk((32, 32), 12, dtype=torch.float64)
    c = torch.tensor([0, 0, 0, 0.7, 0, -0.2], dtype=torch.float64, requires_grad=True)
    p = pupil(a, c, b)
    assert p.is_complex() and p.shape == (32, 32)
    assert torch.allclose(p.abs(), a)
    expected = torch.polar(a, 0.7 * b[3] - 0.2 * b[5])
    assert torch.allclose(p, expected, atol=1e-12)
    p.angle().sum().backward()
    assert c.grad is not None and c.grad[3] != 0
