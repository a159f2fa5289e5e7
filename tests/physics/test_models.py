"""Forward models: analytic checks and gradchecks (ptytasks.physics.models)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from ptytasks.physics.fft import fft2c
from ptytasks.physics.models import Coded, FarField, FourierPtychography, NearField
from ptytasks.physics.propagators import propagate

F64, C128 = torch.float64, torch.complex128
IDX = torch.tensor([0, 1])
# Fractional parts well inside (0, 1): the floor in the position split is not differentiable
# at integers.
POS = [[1.3, 2.6], [3.45, 0.7]]


def rand_c(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=C128, generator=g)


def gradcheck_model(model, obj, probe, param_names, scales=None, fast=True):
    """gradcheck intensities w.r.t. object, probe (if given) and named model parameters.

    ``scales`` maps a parameter name to its unit, so gradcheck perturbs a well-conditioned
    O(1) value (e.g. distances in tens of micrometres, wavevectors in spectrum pixels).
    ``fast`` uses gradcheck's fast mode (random projections of the Jacobian, still exact
    enough to catch a wrong or missing gradient) to keep the suite quick on 2 CPU cores.
    """
    scales = scales or {}
    names = [n for n, _ in model.named_parameters() if n in param_names]
    assert len(names) == len(param_names), f"unknown parameters in {param_names}"
    params = dict(model.named_parameters())
    units = [scales.get(n, 1.0) for n in names]
    vals = [(params[n].detach() / u).clone().requires_grad_() for n, u in zip(names, units,
                                                                                 strict=True)]
    tensors = [obj.clone().requires_grad_()]
    if probe is not None:
        tensors.append(probe.clone().requires_grad_())

    def f(*args):
        o = args[0]
        p = args[1] if probe is not None else None
        rest = args[2:] if probe is not None else args[1:]
        over = {n: v * u for n, v, u in zip(names, rest, units, strict=True)}
        return functional_call(model, over, (o, p, IDX))

    assert torch.autograd.gradcheck(f, [*tensors, *vals], eps=1e-6, atol=1e-6, rtol=1e-4,
                                    fast_mode=fast)


# --- far field ----------------------------------------------------------------------------
def test_farfield_matches_slicing_and_modes():
    obj, probe = rand_c(12, 12), rand_c(2, 6, 6, seed=1)
    m = FarField([[2.0, 3.0], [0.0, 6.0]], (12, 12), (6, 6), dtype=F64)
    exit1 = m.exit_waves(obj, probe[0], IDX)
    assert exit1.shape == (2, 6, 6)
    assert torch.allclose(exit1[0], probe[0] * obj[2:8, 3:9])
    exit2 = m.exit_waves(obj, probe, IDX)
    assert exit2.shape == (2, 2, 6, 6)
    i = m(obj, probe, IDX)
    expected = (fft2c(probe * obj[0:6, 6:12]).abs() ** 2).sum(0)
    assert torch.allclose(i[1], expected)
    # Unitary FFT: counts equal sum |P O|^2; from_detector inverts to_detector.
    assert torch.allclose(i[1].sum(), (probe * obj[0:6, 6:12]).abs().pow(2).sum())
    assert torch.allclose(m.from_detector(m.to_detector(exit2, IDX), IDX), exit2)
    m.intensity_factors.data[1] = 2.0
    assert torch.allclose(m(obj, probe, IDX)[1], 2 * expected)


def test_farfield_learnable_and_bounds():
    m = FarField(POS, (12, 12), (6, 6))
    assert not any(p.requires_grad for p in m.parameters())
    m.learnable("positions")
    assert m.positions.requires_grad and not m.intensity_factors.requires_grad
    with pytest.raises(ValueError, match="outside"):
        FarField([[7.5, 0.0]], (12, 12), (6, 6))(
            torch.ones(12, 12, dtype=torch.complex64), torch.ones(6, 6, dtype=torch.complex64),
            torch.tensor([0]),
        )


def test_farfield_gradcheck():
    m = FarField(POS, (10, 10), (5, 5), dtype=F64)
    gradcheck_model(m, rand_c(10, 10), rand_c(5, 5, seed=1), ["positions"])


def test_farfield_gradcheck_modes_and_intensity_factors():
    m = FarField(POS, (10, 10), (5, 5), dtype=F64)
    gradcheck_model(m, rand_c(10, 10), rand_c(2, 5, 5, seed=1), ["intensity_factors"])


# --- near field ---------------------------------------------------------------------------
NF = dict(wavelength=500e-9, distance=2e-4, pixel_size=1e-6)


def test_nearfield_physics():
    obj, probe = rand_c(16, 16), rand_c(8, 8, seed=1)
    m = NearField([[2.0, 3.0], [8.0, 8.0]], (16, 16), (8, 8), dtype=F64, **NF)
    ex = m.exit_waves(obj, probe, IDX)
    det = m.to_detector(ex, IDX)
    assert torch.allclose(det, propagate(ex, 1e-6, 500e-9, 2e-4))
    assert torch.allclose(m.from_detector(det, IDX), ex, atol=1e-10)
    assert torch.allclose(m(obj, probe, IDX).sum(), ex.abs().pow(2).sum())  # Parseval
    mf = NearField([[2.0, 3.0], [8.0, 8.0]], (16, 16), (8, 8), method="fresnel", **NF)
    assert mf.method == "fresnel"
    with pytest.raises(ValueError):
        NearField(POS, (16, 16), (8, 8), method="fraunhofer", **NF)


def test_nearfield_gradcheck():
    # Short pixel/long wavelength so a distance step changes the pattern measurably.
    m = NearField(POS, (10, 10), (6, 6), wavelength=1e-6, distance=5e-5, pixel_size=1e-6,
                  dtype=F64)
    gradcheck_model(m, rand_c(10, 10), rand_c(6, 6, seed=1), ["positions", "distance"],
                    scales={"distance": 1e-5})


def test_nearfield_distance_gradient_sign():
    # Near the truth the data-misfit gradient points back towards the true distance.
    obj, probe = rand_c(12, 12), rand_c(6, 6, seed=1)
    kw = dict(wavelength=1e-6, pixel_size=1e-6, dtype=F64)
    data = NearField(POS, (12, 12), (6, 6), distance=5e-5, **kw)(obj, probe, IDX).detach()
    for z, sign in [(5.1e-5, 1), (4.9e-5, -1)]:
        m = NearField(POS, (12, 12), (6, 6), distance=z, **kw).learnable("distance")
        ((m(obj, probe, IDX) - data) ** 2).sum().backward()
        assert sign * m.distance.grad > 0


# --- coded --------------------------------------------------------------------------------
CD = dict(wavelength=500e-9, distance=3e-5, surface_distance=5e-6, pixel_size=1e-6)


def test_coded_physics_and_surface_override():
    obj, illum = rand_c(16, 16), rand_c(8, 8, seed=1)
    surf = torch.polar(torch.ones(8, 8, dtype=F64), 3 * torch.rand(8, 8, dtype=F64))
    m = Coded([[2.0, 3.0], [8.0, 8.0]], (16, 16), (8, 8), surface=surf, dtype=F64, **CD)
    ex = m.exit_waves(obj, illum, IDX)
    det = m.to_detector(ex, IDX)
    manual = propagate(surf * propagate(ex, 1e-6, 500e-9, 3e-5), 1e-6, 500e-9, 5e-6)
    assert torch.allclose(det, manual)
    assert torch.allclose(m.from_detector(det, IDX), ex, atol=1e-10)  # phase-only surface
    other = torch.ones(8, 8, dtype=C128)
    assert not torch.allclose(m.to_detector(ex, IDX, surface=other), det)
    assert torch.allclose(m.to_detector(ex, IDX, surface=surf), det)
    assert torch.allclose(m(obj, illum, IDX, surface=other),
                          Coded([[2.0, 3.0], [8.0, 8.0]], (16, 16), (8, 8), dtype=F64, **CD)(
                              obj, illum, IDX))
    with pytest.raises(ValueError):
        Coded(POS, (16, 16), (8, 8), surface=torch.ones(4, 4), **CD)


def test_coded_gradcheck():
    surf = torch.polar(torch.ones(6, 6, dtype=F64), 3 * torch.rand(6, 6, dtype=F64))
    m = Coded(POS, (10, 10), (6, 6), wavelength=1e-6, distance=3e-5, surface_distance=1e-5,
              pixel_size=1e-6, surface=surf, dtype=F64)
    gradcheck_model(m, rand_c(10, 10), rand_c(6, 6, seed=1),
                    ["positions", "distance", "surface_distance", "surface"],
                    scales={"distance": 1e-5, "surface_distance": 1e-5})


# --- Fourier ptychography -----------------------------------------------------------------
FP = dict(wavelength=500e-9, na=0.1, pixel_size=0.5e-6)  # pupil radius 6.4 spectrum px at M=64


def plane_wave(shape, f, pix):
    """``exp(2 pi i f . r)`` sampled on the object grid (f in cycles/m)."""
    y = torch.arange(shape[0], dtype=F64)[:, None] * pix
    x = torch.arange(shape[1], dtype=F64)[None, :] * pix
    arg = 2 * math.pi * (f[0] * y + f[1] * x)
    return torch.polar(torch.ones_like(arg), arg)


def test_fourier_brightfield_and_sign():
    shape, small = (64, 64), (16, 16)
    df = 1 / (64 * 0.5e-6)  # spectrum pitch, cycles/m
    f0 = (0.0, 10 * df)  # object frequency beyond the NA (6.4 px)
    obj = 1 + 0 * plane_wave(shape, f0, 0.5e-6)
    m = FourierPtychography([[0.0, 0.0], [0.0, 10 * df], [0.0, -10 * df]], shape, small,
                            zernike_indices=6, dtype=F64, **FP)
    i = m(obj, None, torch.tensor([0]))
    assert torch.allclose(i, torch.ones_like(i))  # transparent object: unit intensity
    # A grating exp(+2 pi i f0 x) lands at +f0 in fft2c: LED +f0 sees it in bright field,
    # LED -f0 (and the on-axis LED) see nothing: documents the wavevector sign.
    grating = plane_wave(shape, f0, 0.5e-6)
    i = m(grating, None, torch.tensor([0, 1, 2]))
    assert torch.allclose(i[1], torch.ones_like(i[1]))
    assert i[0].max() < 1e-20 and i[2].max() < 1e-20
    assert torch.allclose(m.spectrum_positions[1], torch.tensor([24.0, 34.0], dtype=F64))


def test_fourier_pupil_and_override():
    m = FourierPtychography([[0.0, 0.0], [1e5, 0.0]], (64, 64), (16, 16), zernike_indices=6,
                            dtype=F64, **FP)
    p = m.pupil_function()
    assert p.shape == (16, 16) and torch.allclose(p.abs(), m.aperture)
    assert int(m.aperture.sum()) == 129  # disk of radius 6.4 spectrum pixels
    obj = rand_c(64, 64)
    ex = m.exit_waves(obj, None, IDX)
    assert ex.shape == (2, 16, 16)
    i0 = m(obj, None, IDX)
    m.zernike.data[3] = 1.0  # defocus term
    assert not torch.allclose(m(obj, None, IDX), i0)
    assert torch.allclose(m(obj, None, IDX, pupil=m.aperture.to(C128)), i0)
    # Defocus parameter equals propagating the object by +distance (angular spectrum), up to
    # the periodic-window approximation: exact for integer windows.
    m.zernike.data.zero_()
    m.distance.data.fill_(20e-6)
    mi = FourierPtychography([[0.0, 0.0]], (64, 64), (16, 16), dtype=F64, **FP)
    ref = mi(propagate(obj, 0.5e-6, 500e-9, 20e-6), None, torch.tensor([0]))
    assert torch.allclose(m(obj, None, torch.tensor([0])), ref, atol=1e-10)
    # from_detector returns the pupil-filtered window.
    w = m.to_detector(ex, IDX)
    assert torch.allclose(m.from_detector(w, IDX), ex * m.pupil_function(), atol=1e-10)
    with pytest.raises(ValueError):
        m.exit_waves(obj, torch.ones(16, 16, dtype=C128), IDX)
    # Illumination modes on the object grid: (K, My, Mx) -> (b, K, my, mx), summed in I.
    modes = torch.stack([torch.ones(64, 64, dtype=C128), 0.5 * rand_c(64, 64, seed=3)])
    ex_k = m.exit_waves(obj, modes, IDX)
    assert ex_k.shape == (2, 2, 16, 16)
    i_k = m(obj, modes, IDX)
    assert torch.allclose(i_k, m(obj, None, IDX) + m(obj * modes[1], None, IDX))


def test_fourier_coded_detection():
    mask = torch.polar(torch.ones(16, 16, dtype=F64), 2 * torch.rand(16, 16, dtype=F64))
    m = FourierPtychography([[0.0, 0.0], [1e5, 0.0]], (64, 64), (16, 16), dtype=F64,
                            mask=mask, mask_distance=1e-5, **FP)
    obj = rand_c(64, 64)
    ex = m.exit_waves(obj, None, IDX)
    w = m.to_detector(ex, IDX)
    plain = FourierPtychography([[0.0, 0.0], [1e5, 0.0]], (64, 64), (16, 16), dtype=F64, **FP)
    assert not torch.allclose(w.abs(), plain.to_detector(ex, IDX).abs())
    assert torch.allclose(m.from_detector(w, IDX), ex * m.pupil_function(), atol=1e-10)


def test_fourier_gradcheck():
    # 16x16 object, 8x8 images; LED windows at fractional spectrum offsets.
    df = 1 / (16 * 0.5e-6)
    k = [[0.3 * df, -0.4 * df], [1.45 * df, 2.6 * df]]
    m = FourierPtychography(k, (16, 16), (8, 8), wavelength=500e-9, na=0.3, pixel_size=0.5e-6,
                            distance=2e-6, zernike_indices=[2, 4, 5], dtype=F64)
    m.zernike.data = torch.tensor([0.2, -0.3, 0.1], dtype=F64)
    gradcheck_model(m, rand_c(16, 16), None, ["wavevectors", "zernike", "distance"],
                    scales={"wavevectors": df, "distance": 1e-6})


def test_fourier_gradcheck_illumination():
    m = FourierPtychography([[1e4, 3e4], [-2e4, 5e4]], (16, 16), (8, 8), wavelength=500e-9,
                            na=0.3, pixel_size=0.5e-6, zernike_indices=3, dtype=F64)
    gradcheck_model(m, rand_c(16, 16), rand_c(16, 16, seed=2), [])


@pytest.mark.slow
def test_full_gradcheck_all_models():
    """Full-Jacobian gradchecks (the fast-mode ones above check random projections)."""
    surf = torch.polar(torch.ones(5, 5, dtype=F64), 3 * torch.rand(5, 5, dtype=F64))
    obj, probe = rand_c(10, 10), rand_c(5, 5, seed=1)
    nf = dict(wavelength=1e-6, pixel_size=1e-6, dtype=F64)
    gradcheck_model(FarField(POS, (10, 10), (5, 5), dtype=F64), obj, probe, ["positions"],
                    fast=False)
    gradcheck_model(NearField(POS, (10, 10), (5, 5), distance=5e-5, **nf), obj, probe,
                    ["positions", "distance"], scales={"distance": 1e-5}, fast=False)
    gradcheck_model(Coded(POS, (10, 10), (5, 5), distance=3e-5, surface_distance=1e-5,
                          surface=surf, **nf), obj, probe,
                    ["positions", "distance", "surface_distance", "surface"],
                    scales={"distance": 1e-5, "surface_distance": 1e-5}, fast=False)
    df = 1 / (16 * 0.5e-6)
    m = FourierPtychography([[0.3 * df, -0.4 * df], [1.45 * df, 2.6 * df]], (16, 16), (8, 8),
                            wavelength=500e-9, na=0.3, pixel_size=0.5e-6, distance=2e-6,
                            zernike_indices=[2, 4, 5], dtype=F64)
    m.zernike.data = torch.tensor([0.2, -0.3, 0.1], dtype=F64)
    gradcheck_model(m, rand_c(16, 16), None, ["wavevectors", "zernike", "distance"],
                    scales={"wavevectors": df, "distance": 1e-6}, fast=False)


def test_fourier_synthetic_aperture_and_band_limit():
    df = 1 / (64 * 0.5e-6)
    m = FourierPtychography([[0.0, 0.0], [0.0, 10 * df], [3 * df, -2 * df]], (64, 64),
                            (16, 16), zernike_indices=6, dtype=F64, **FP)
    band = m.synthetic_aperture()
    # one LED alone: the pupil disc (129 pixels) at its window
    alone = FourierPtychography([[0.0, 0.0]], (64, 64), (16, 16), dtype=F64, **FP)
    assert int(alone.synthetic_aperture().sum()) == 129
    assert alone.synthetic_aperture()[32, 32] and not alone.synthetic_aperture()[32, 40]
    assert 129 < int(band.sum()) < 3 * 129  # the union: overlapping discs counted once
    obj = rand_c(64, 64)
    low = m.band_limited(obj)
    # a projection: idempotent, the spectrum beyond the band gone, norm not increased
    assert torch.allclose(m.band_limited(low), low, atol=1e-12)
    assert fft2c(low)[~band].abs().max() < 1e-12
    assert low.norm() < obj.norm()
    # every image sees the band-limited object as it sees the object (windows at whole
    # pixels; a sub-pixel window's periodic shift also reads its rectangle's corners)
    idx = torch.arange(3)
    assert torch.allclose(m(low, None, idx), m(obj, None, idx), atol=1e-10)
