"""pty-chi through ptyflow's bridge equals pty-chi called natively (issue #17).

Needs ``ptychi`` importable in the test's interpreter: ``bash bench/install_peers.sh
--shared``, or run ``bench/.peers-venv/bin/python -m pytest tests/bench/test_ptychi_bridge.py``
(that venv sees the project's packages). Skipped otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.peers import _shim

_shim.install()
ptychi_api = pytest.importorskip("ptychi.api")
torch = pytest.importorskip("torch")

from bench.peers import ptychi_engine  # noqa: E402
from bench.suite_common import error_only, farfield_dataset, illuminated  # noqa: E402

EPOCHS = 10


@pytest.fixture(scope="module")
def data():
    return farfield_dataset(frame_size=64, n_positions=60, overlap=0.65, dose=1e6, seed=0)


def _native_rpie(data, probe, epochs):
    """pty-chi on its own conventions: DC-corner frames, default (SUPPORT) origin."""
    from ptychi.api.task import PtychographyTask

    frames = np.fft.ifftshift(np.asarray(data.frames, np.float32), axes=(-2, -1))
    n, ny, nx = frames.shape
    shape = tuple(data.object_shape)
    origin = np.round(np.array(shape) / 2.0) - 0.5  # what SUPPORT gives
    centres = np.asarray(data.positions_px) + [(ny - 1) / 2, (nx - 1) / 2] - origin
    o = ptychi_api.RPIEOptions()
    o.data_options.fft_shift = False
    o.object_options.alpha = 0.1
    o.probe_options.alpha = 0.1
    o.object_options.step_size = o.probe_options.step_size = 1.0
    o.probe_options.optimizable = True
    o.reconstructor_options.batch_size = 4
    o.reconstructor_options.num_epochs = epochs
    o.reconstructor_options.default_device = ptychi_api.Devices.CPU
    o.reconstructor_options.random_seed = 0
    task = PtychographyTask(
        o,
        diffraction_data=frames,
        object_data=torch.ones((1, *shape), dtype=torch.complex64),
        probe_data=torch.as_tensor(probe / np.sqrt(ny * nx))[None, None],
        probe_position_x_px=centres[:, 1],
        probe_position_y_px=centres[:, 0],
    )
    np.testing.assert_allclose(
        task.reconstructor.parameter_group.object.pos_origin_coords.cpu().numpy(), origin
    )
    task.run()
    return task.get_data_to_cpu("object", as_numpy=True)[0]


def test_bridge_forward_model_reproduces_integer_corner_frames(data):
    """True object and probe through the bridge's geometry predict ptyflow's frames."""
    from ptychi.api.task import PtychographyTask

    from ptytasks.physics.models.farfield import FarField
    from ptytasks.simulate import _common as C

    gt = data.ground_truth
    obj, probe = np.asarray(gt["object"], np.complex64), np.asarray(gt["probe"], np.complex64)
    pos = np.round(np.asarray(data.positions_px))
    frames = C.forward(FarField(torch.as_tensor(pos), obj.shape, (64, 64)), obj, probe)
    centres, origin = ptychi_engine.placement(pos, (64, 64))
    o = ptychi_api.RPIEOptions()
    o.object_options.determine_position_origin_coords_by = (
        ptychi_api.ObjectPosOriginCoordsMethods.SPECIFIED
    )
    o.object_options.position_origin_coords = origin
    o.reconstructor_options.default_device = ptychi_api.Devices.CPU
    task = PtychographyTask(
        o,
        diffraction_data=frames,
        object_data=torch.as_tensor(obj[None]),
        probe_data=torch.as_tensor(probe / 64.0)[None, None],
        probe_position_x_px=centres[:, 1],
        probe_position_y_px=centres[:, 0],
    )
    with torch.no_grad():
        y = task.reconstructor.forward_model.forward(torch.arange(len(pos))).cpu().numpy()
    y = np.fft.fftshift(y, axes=(-2, -1))
    misfit = np.linalg.norm(y - frames) / np.linalg.norm(frames)
    assert misfit < 1e-5  # the integer-origin bridge gave 0.13


def test_bridged_rpie_matches_native_rpie(data):
    gt = data.ground_truth
    truth, mask = np.asarray(gt["object"]), illuminated(data)
    probe = np.asarray(gt["probe"], np.complex64)
    job = {"engine": "rpie", "epochs": EPOCHS, "object_shape": list(data.object_shape),
           "seed": 0, "learn_probe": True, "modality": "farfield", "far_field": True,
           "settings": {}}  # fmt: skip
    arrays = {
        "frames": np.asarray(data.frames, np.float32),
        "positions_px": np.asarray(data.positions_px, np.float64),
        "probe": probe,
    }
    bridged = ptychi_engine.run(job, arrays, lambda *a: None)["object"]
    native = _native_rpie(data, probe, EPOCHS)
    e_b, e_n = error_only(bridged, truth, mask), error_only(native, truth, mask)
    assert abs(e_b - e_n) <= 0.05 * e_n, (e_b, e_n)


@pytest.fixture(scope="module")
def nearfield_int():
    """Noise-free near-field set (the grid's geometry) re-simulated at integer corners."""
    from ptytasks.physics.models.nearfield import NearField
    from ptytasks.simulate import _common as C
    from ptytasks.simulate import simulate

    d = simulate("nearfield", frame_size=64, n_positions=16, dose=None, seed=101,
                 object_kind="astronaut", scan="random")  # fmt: skip
    gt = d.ground_truth
    obj, probe = np.asarray(gt["object"], np.complex64), np.asarray(gt["probe"], np.complex64)
    pos = np.round(np.asarray(d.positions_px, np.float64))
    model = NearField(torch.as_tensor(pos), obj.shape, (64, 64), wavelength=d.wavelength,
                      distance=d.distance, pixel_size=d.pixel_size)  # fmt: skip
    return d, obj, probe, pos, C.forward(model, obj, probe)


def test_bridge_nearfield_forward_model_reproduces_frames(nearfield_int):
    """The bridge's near-field options keep pty-chi's angular-spectrum propagator.

    pty-chi 2.2.0 picks its Fresnel transform (another detector pitch) when
    pixel^2 / (lambda z) < 1 / N, as in this geometry (0.0066 < 1 / 64): 98 % misfit."""
    from ptychi.api.task import PtychographyTask
    from ptychi.propagate import AngularSpectrumPropagator

    d, obj, probe, pos, frames = nearfield_int
    centres, origin = ptychi_engine.placement(pos, (64, 64))
    o = ptychi_api.RPIEOptions()
    o.data_options.data = frames
    o.data_options.fft_shift = False
    o.data_options.free_space_propagation_distance_m = d.distance
    o.data_options.wavelength_m = d.wavelength
    o.object_options.initial_guess = torch.as_tensor(obj[None])
    o.object_options.pixel_size_m = d.pixel_size
    o.object_options.determine_position_origin_coords_by = (
        ptychi_api.ObjectPosOriginCoordsMethods.SPECIFIED
    )
    o.object_options.position_origin_coords = origin
    o.probe_options.initial_guess = torch.as_tensor(probe[None, None])
    o.probe_position_options.position_x_px = centres[:, 1]
    o.probe_position_options.position_y_px = centres[:, 0]
    o.reconstructor_options.default_device = ptychi_api.Devices.CPU
    with ptychi_engine.angular_spectrum_only(), torch.no_grad():
        fm = PtychographyTask(o).reconstructor.forward_model
        y = fm.forward(torch.arange(len(pos))).cpu().numpy()
    assert isinstance(fm.free_space_propagator, AngularSpectrumPropagator)
    misfit = np.linalg.norm(y - frames) / np.linalg.norm(frames)
    assert misfit < 1e-5  # the Fresnel transform gave 0.98


def test_bridged_nearfield_rpie_converges(nearfield_int):
    """Bridged rPIE from the true probe on noise-free integer-corner near-field frames
    (20 epochs: 0.08; with pty-chi's Fresnel transform 0.34; ptyflow rPIE 0.008)."""
    d, obj, probe, pos, frames = nearfield_int
    job = {"engine": "rpie", "epochs": 20, "object_shape": list(d.object_shape), "seed": 0,
           "learn_probe": True, "modality": "nearfield", "far_field": False,
           "distance": d.distance,
           "wavelength": d.wavelength, "pixel_size": d.pixel_size, "settings": {}}  # fmt: skip
    arrays = {"frames": frames, "positions_px": pos, "probe": probe}
    out = ptychi_engine.run(job, arrays, lambda *a: None)["object"]
    mask = illuminated(d, positions=pos)
    assert error_only(out, obj, mask) < 0.15


def test_bridge_hands_pty_chi_the_detector_mask(data):
    """Pixels outside the dataset's mask (``valid_pixel_mask``, as ptyflow's engines leave
    them out) do not matter to bridged pty-chi: their values shuffled within each frame
    change nothing, and without the mask they do. The mask is centred like the frames."""
    mask = np.ones(data.frame_shape, bool)
    mask[19:23] = False
    mask[:, 3] = False  # off centre: a wrong fftshift of the mask would leave it in the fit
    rng = np.random.default_rng(1)
    clean = np.asarray(data.frames, np.float32)
    garbage = clean.copy()
    for f in garbage:
        f[~mask] = rng.permutation(f[~mask])
    job = {"engine": "rpie", "epochs": 2, "object_shape": list(data.object_shape),
           "seed": 0, "learn_probe": True, "modality": "farfield", "far_field": True,
           "settings": {}}  # fmt: skip

    def run(frames, with_mask):
        arrays = {"frames": frames, "positions_px": np.asarray(data.positions_px, np.float64),
                  "probe": np.asarray(data.ground_truth["probe"], np.complex64),
                  "valid_pixel_mask": mask if with_mask else None}  # fmt: skip
        return ptychi_engine.run(job, arrays, lambda *a: None)["object"]

    a, b = run(clean, True), run(garbage, True)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    c, ref = run(garbage, False), run(clean, False)
    assert np.abs(c - ref).max() > 1e-3 * np.abs(ref).max()
