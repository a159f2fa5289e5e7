"""Frames of any size onto the network's grid (issue #22, 8c): the pixel scaling of the
crop/pad mapping, the output's way back to the data's pixels, and the engine on frames of
another size than its network's, with and without the network's own probe."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from ptytasks.learned.frame_mapping import FrameMapping, probe_match
from ptytasks.learned.single_shot_data import Geometry, zone_plate
from ptytasks.physics.fft import fft2c

pytestmark = pytest.mark.usefixtures("one_thread")


def _band_limited(size: int, band: int, seed: int = 0) -> torch.Tensor:
    """A random complex wave whose spectrum lives on the central ``band`` pixels a side."""
    g = torch.Generator().manual_seed(seed)
    spec = torch.zeros(size, size, dtype=torch.complex64)
    a = size // 2 - band // 2 + 1  # leave the unpaired Nyquist row/column empty
    b = a + band - 1
    spec[a:b, a:b] = torch.complex(torch.randn(b - a, b - a, generator=g),
                                   torch.randn(b - a, b - a, generator=g))  # fmt: skip
    return torch.fft.ifft2(torch.fft.ifftshift(spec), norm="ortho")


@pytest.mark.parametrize(("big", "small"), [(64, 32), (48, 32), (96, 32), (16, 32)])
def test_crop_keeps_the_window_and_scales_the_pixel(big, small):
    # a wave band-limited to the kept angles: the mapped wave is the same wave sampled at
    # the network pixel s dx (network pixel j = data pixel s j), with the same photons, and
    # its far field is the cropped (padded) frame
    m = FrameMapping(big, small)
    s = m.scale
    psi = _band_limited(big, min(big, small))
    net = torch.as_tensor(m.probe_to_network(psi.numpy()))
    assert net.shape == (small, small)
    np.testing.assert_allclose(float((net.abs() ** 2).sum()), float((psi.abs() ** 2).sum()),
                               rtol=1e-5)  # fmt: skip
    frames = (fft2c(psi).abs() ** 2)[None]
    np.testing.assert_allclose(m.frames(frames)[0].numpy(), (fft2c(net).abs() ** 2).numpy(),
                               atol=1e-5 * float(frames.max()))  # fmt: skip
    if s > 1 and float(s).is_integer():  # network pixel j is data pixel s j
        k = int(s)
        np.testing.assert_allclose(net.numpy(), s * psi[::k, ::k].numpy(), atol=1e-5)
    if s < 1:  # data pixel i is network pixel i / s
        k = int(round(1 / s))
        np.testing.assert_allclose(net[::k, ::k].numpy(), s * psi.numpy(), atol=1e-5)
    back = m.probe_to_data(net.numpy())
    np.testing.assert_allclose(back, psi.numpy(), atol=1e-5)
    assert m.mode == ("crop" if big > small else "pad")


@pytest.mark.parametrize("big", [64, 48, 24])
def test_patches_come_back_at_data_pixel_s_j(big):
    # a complex linear ramp in network coordinates; bilinear interpolation is exact on it,
    # so the data-grid patch must hold f(x / s) at data pixel x of the window
    m = FrameMapping(big, 32)
    crop = Geometry(32).crop
    u = torch.arange(crop.start, crop.stop, dtype=torch.float32)
    uy, ux = torch.meshgrid(u, u, indexing="ij")
    f = lambda y, x: torch.complex(y + 2 * x, 0.5 * x - y)  # noqa: E731
    out, start = m.patches_to_data(f(uy, ux)[None], crop)
    side = out.shape[-1]
    assert (start, side) == m.patch_window(crop) and side == round(m.scale * 16)
    x = (torch.arange(side, dtype=torch.float32) + start) / m.scale
    inside = (x >= crop.start) & (x <= crop.stop - 1)  # past the last sample: edge value
    xy, xx = torch.meshgrid(x, x, indexing="ij")
    want = f(xy, xx)
    sel = inside[:, None] & inside[None, :]
    np.testing.assert_allclose(out[0][sel].numpy(), want[sel].numpy(), atol=1e-4)
    assert sel.float().mean() > 0.8
    centre = (start + (side - 1) / 2) / m.scale  # the patch is centred on the output's centre
    assert abs(centre - (crop.start + 7.5)) <= 0.5 / m.scale + 1e-9


def test_identity_when_sizes_agree():
    m = FrameMapping(32, 32)
    crop = Geometry(32).crop
    p = torch.randn(3, 16, 16, dtype=torch.complex64)
    out, start = m.patches_to_data(p, crop)
    assert out is p and start == crop.start and m.mode == "none" and m.scale == 1
    probe = zone_plate(Geometry(32))
    np.testing.assert_array_equal(m.probe_to_network(probe), probe)


def test_weights_resolve_per_frame_size(tmp_path):
    from ptytasks.learned.inversion import default_weights, preset_files, resolve_weights

    base = default_weights("ppn")
    assert resolve_weights(None, "ppn", 48) == base  # no 48 set: the engine resamples
    sized = base.with_name("ppn_default_64.pt")
    assert resolve_weights("default", "ppn", 64) == (sized if sized.is_file() else base)
    assert resolve_weights(tmp_path / "w.pt", "ppn", 64) == tmp_path / "w.pt"
    files = preset_files("default", "ppn")
    assert base in files and (sized in files) == sized.is_file()
    assert preset_files(tmp_path / "w.pt") == [tmp_path / "w.pt"]


def _matched(n_data: int, seed: int, dose: float = 1e6):
    """Simulated far-field scan of ``n_data``-pixel frames whose probe is the 32 x 32
    network's own training probe (its far field zero-padded): the case where the crop
    shows the network exactly the frames it was trained on, at the coarser pixel."""
    from ptytasks.physics.shifts import extract_patches
    from ptytasks.simulate import simulate

    d = simulate("farfield", frame_size=n_data, n_positions=64, overlap=0.65, scan="raster",
                 object_kind="dead_leaves", dose=dose, known_probe=True, seed=seed)  # fmt: skip
    p = FrameMapping(n_data, 32).probe_to_data(zone_plate(Geometry(32), dose))
    obj = torch.as_tensor(d.ground_truth["object"])
    pos = torch.as_tensor(d.ground_truth["positions_px"])
    psi = torch.as_tensor(p) * extract_patches(obj, pos, (n_data, n_data))
    gen = torch.Generator().manual_seed(seed)
    frames = torch.poisson((fft2c(psi).abs() ** 2).double(), generator=gen).float().numpy()
    return dataclasses.replace(d, frames=frames, probe=p,
                               ground_truth={**d.ground_truth, "probe": p})  # fmt: skip


def _errors(data, obj) -> tuple[float, float]:
    """Complex error of ``obj`` and of the uniform object on the illuminated region."""
    from bench.bench_learned import region
    from ptytasks.metrics.errors import complex_error

    w, truth = region(data), data.ground_truth["object"]
    return (complex_error(obj, truth, w),
            complex_error(np.ones(truth.shape, np.complex64), truth, w))  # fmt: skip


#: Error of the resampled 64 x 64 reconstruction over the uniform object's, 32 x 32 weights,
#: the network's own probe, seeds 11-13 (set on them; seed 14 is scored): 0.75, 0.78, 0.75.
#: The native 32 x 32 frames of the same seeds: 0.68, 0.65, 0.60.
MATCHED_RATIO = 0.85


def test_engine_resamples_64_frames_to_the_32_network():
    # the physics of the mapping, isolated from the probe: frames of 64 pixels made with the
    # 32 x 32 network's probe are cropped to its grid and the output comes back to the 64
    # grid; the result beats the uniform object by the floor set on other seeds
    from ptytasks.engines.learned import LearnedOptions, reconstruct_learned
    from ptytasks.learned.inversion import default_weights

    data = _matched(64, seed=14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the probe matches: no warning
        res = reconstruct_learned(data, LearnedOptions(weights=str(default_weights("ppn"))))
    fm = res.extras["frame_mapping"]
    assert fm == {"mode": "crop", "data_size": 64, "net_size": 32, "scale": 2.0}
    assert res.object.shape == tuple(data.object_shape)
    np.testing.assert_array_equal(res.positions_px, data.positions_px)
    assert res.extras["probe_match"] > 0.99 and res.extras["patch_coverage"] == 1.0
    flux_kept = float(np.sum(np.abs(FrameMapping(64, 32).probe_to_network(data.probe)) ** 2))
    assert res.extras["flux"] == pytest.approx(flux_kept, rel=1e-5)
    err, uniform = _errors(data, res.object)
    print(f"64 px frames, 32 px network, its own probe: error {err:.3f}, uniform {uniform:.3f}"
          f" (ratio {err / uniform:.2f})")
    assert err < MATCHED_RATIO * uniform


def test_engine_warns_when_the_resampled_probe_is_not_the_networks():
    # the simulator's own 64 x 64 zone plate has twice the aperture: no resampling makes
    # it the 32 x 32 training probe, and the engine says so
    from ptytasks.engines.learned import LearnedOptions, reconstruct_learned
    from ptytasks.learned.inversion import default_weights
    from ptytasks.simulate import simulate

    data = simulate("farfield", frame_size=48, n_positions=9, overlap=0.5, known_probe=True,
                    dose=1e5, seed=2)  # fmt: skip
    with pytest.warns(UserWarning, match="not to be trusted"):
        res = reconstruct_learned(data, LearnedOptions(weights=str(default_weights("ppn"))))
    assert res.extras["probe_match"] < 0.95 and res.object.shape == tuple(data.object_shape)
    assert res.extras["frame_mapping"]["mode"] == "crop"
    # the probe-free fallback starts from the training probe: matched by construction
    nop = dataclasses.replace(data, probe=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = reconstruct_learned(nop, LearnedOptions(weights=str(default_weights("ppn"))))
    assert res.extras["probe_match"] > 0.99 and res.probe.shape == (48, 48)


def test_non_square_frames_are_a_clear_error():
    from ptytasks.engines.learned import reconstruct_learned
    from ptytasks.simulate import simulate

    data = simulate("farfield", frame_size=32, n_positions=4, seed=0)
    bad = dataclasses.replace(data, frames=np.asarray(data.frames)[:, :, :24])
    with pytest.raises(ValueError, match="square frames; data has 32x24"):
        reconstruct_learned(bad)


def test_probe_match_ignores_phase():
    p = zone_plate(Geometry(32))
    assert probe_match(p, p) == pytest.approx(1.0)
    flat = np.fft.ifft2(np.fft.ifftshift(np.abs(fft2c(torch.as_tensor(p)).numpy())))
    assert probe_match(flat.astype(np.complex64), p) == pytest.approx(1.0, abs=1e-5)
    # it rates the aperture (the bright-field disc), not the defocus: a probe 28.8 px wide
    # from the same zone plate has the same far-field amplitude ...
    assert probe_match(zone_plate(Geometry(32, probe_diameter_px=28.8)), p) > 0.999
    # ... while the simulator's 64 x 64 zone plate (twice the aperture) cropped to 32 does not
    big = FrameMapping(64, 32).probe_to_network(zone_plate(Geometry(64)))
    assert probe_match(big, p) < 0.8
