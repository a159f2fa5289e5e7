"""The learned aperture prior of a far-field probe (hypothesis 64, docs/rnf.md): its fit
to a start probe, its gradient, its gate, and RNF using it where photons are starved."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptytasks.engines.aperture_probe import (
    DISK_MISFIT_MAX,
    ApertureProbe,
    detector_wave,
    object_wave,
)
from ptytasks.engines.rnf import RNFOptions, reconstruct_rnf
from ptytasks.simulate import simulate

N = 64


def _pupil_probe(radius, b=0.007, centre=(32.0, 32.0), shape="disk"):
    yy, xx = np.indices((N, N))
    rho2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    if shape == "disk":  # binary on the pixel grid, as the simulator's zone plate
        pupil = (rho2 <= radius**2).astype(float)
    else:  # square of the same area
        h = radius * math.sqrt(math.pi) / 2
        pupil = ((abs(yy - centre[0]) <= h) & (abs(xx - centre[1]) <= h)).astype(float)
    wave = torch.as_tensor(pupil * np.exp(1j * np.pi * b * rho2))
    return object_wave(wave)


def test_detector_and_object_waves_are_inverse_and_centred():
    p = _pupil_probe(20.0)
    assert torch.allclose(detector_wave(object_wave(p)), p, atol=1e-12)
    i = p.abs() ** 2  # the focus-side probe of a centred pupil sits at the window centre
    yy = torch.arange(N, dtype=torch.float64)[:, None]
    assert float((i * yy).sum() / i.sum()) == pytest.approx(N // 2, abs=0.5)


def test_the_fit_reads_radius_centre_and_defocus_off_the_start():
    start = _pupil_probe(22.3, b=0.0065, centre=(31.4, 32.6))
    ap = ApertureProbe(start)
    r, cy, cx, s = (float(v) for v in ap.params.detach())
    assert r == pytest.approx(22.3, abs=0.3) and s == 0.0
    assert (cy, cx) == (pytest.approx(31.4, abs=0.1), pytest.approx(32.6, abs=0.1))
    assert ap.fresnel_b == pytest.approx(0.0065, rel=0.02)
    assert ap.misfit < 0.1 and float(ap().detach().abs().pow(2).sum()) == pytest.approx(
        float(start.abs().pow(2).sum()), rel=1e-6)
    assert ApertureProbe(_pupil_probe(22.3, shape="square")).misfit > DISK_MISFIT_MAX


def test_its_gradient_finds_the_pupil_edge():
    """From a start 1.2 px too wide and 5 % off in defocus (the blind start's errors at 2
    counts per pixel), matching a target's far-field intensities moves radius and defocus
    to the target's."""
    target = _pupil_probe(25.6, b=0.0070)
    ap = ApertureProbe(_pupil_probe(26.8, b=0.0070 * 1.05))
    g = torch.Generator().manual_seed(0)  # a few known phase objects: the frames' content
    objs = torch.exp(1j * torch.nn.functional.avg_pool2d(
        torch.randn(4, 1, N + 4, N + 4, generator=g, dtype=torch.float64), 5, 1)[:, 0])
    want = detector_wave(target * objs).abs() ** 2
    opt = torch.optim.Adam([ap.params], lr=0.01)
    for _ in range(400):
        opt.zero_grad()
        p = ap().to(torch.complex128)
        loss = ((detector_wave(p * objs).abs() ** 2 - want) ** 2).sum()
        loss.backward()
        opt.step()
    r, _, _, s = (float(v) for v in ap.params.detach())
    assert r == pytest.approx(25.6, abs=0.25)  # the binary edge against a 1 px ramp (start 26.8)
    assert ap.fresnel_b * (1 + s) == pytest.approx(0.0070, rel=0.02)


def _starved(**kw):
    # ~2 counts per pixel, no probe in the data: RNF starts from the blind estimate
    return simulate("farfield", frame_size=32, n_positions=36, dose=2 * 32 * 32, seed=4, **kw)


def test_rnf_learns_the_aperture_only_where_photons_are_starved_and_no_probe_is_given():
    res = reconstruct_rnf(_starved(), RNFOptions(epochs=6))
    assert res.extras["data_term"]["rule"]["starved"]
    rep = res.extras["probe_aperture"]
    assert abs(rep["radius_px"] - rep["start"]["radius_px"]) > 0.05  # learned from epoch 1
    assert rep["start_misfit"] <= DISK_MISFIT_MAX
    off = reconstruct_rnf(_starved(), RNFOptions(epochs=6, probe_aperture=False))
    assert "probe_aperture" not in off.extras
    assert not np.array_equal(res.loss_history, off.loss_history)
    # a probe of the data's own (measured, or the simulator's) is not replaced
    known = reconstruct_rnf(_starved(known_probe=True), RNFOptions(epochs=2))
    assert "probe_aperture" not in known.extras
    lit = simulate("farfield", frame_size=32, n_positions=36, dose=1e6, seed=4)
    assert "probe_aperture" not in reconstruct_rnf(lit, RNFOptions(epochs=1)).extras
    with pytest.raises(ValueError, match="probe_aperture"):
        RNFOptions(probe_aperture="later")
    near = simulate("nearfield", frame_size=32, n_positions=9, seed=0)
    with pytest.raises(ValueError, match="far-field"):
        reconstruct_rnf(near, RNFOptions(epochs=1, probe_aperture=True))
