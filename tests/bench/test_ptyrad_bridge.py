"""PtyRAD's forward model, built through ptyflow's bridge from the true object and probe,
reproduces noise-free frames, and keeps the given positions (ptyrad bridge audit).

Needs ``ptyrad`` importable: run ``bench/.peers-venv/bin/python -m pytest
tests/bench/test_ptyrad_bridge.py`` (that venv sees the project's packages). Skipped otherwise.
"""

from __future__ import annotations

import dataclasses
import tempfile

import numpy as np
import pytest

from bench.peers import _shim

_shim.install()
pytest.importorskip("ptyrad.solver")
torch = pytest.importorskip("torch")

from bench.peers import ptyrad_engine  # noqa: E402
from bench.suite_common import farfield_dataset  # noqa: E402


@pytest.fixture()  # per test: the constraint pass below also blurs the object (obj_rblur)
def model_and_data():
    from ptyrad.core import PtychoModel
    from ptyrad.params.ptyrad_params import PtyRADParams
    from ptyrad.solver import PtyRADSolver

    from ptytasks.physics.models.farfield import FarField
    from ptytasks.simulate import _common as C

    data = farfield_dataset(frame_size=64, n_positions=40, overlap=0.75, dose=None, seed=1)
    g = data.ground_truth
    obj = np.asarray(g["object"], np.complex64)
    probe = np.asarray(g["probe"], np.complex64)
    # Whole-pixel corners: PtyRAD shifts the probe by the sub-pixel remainder while the
    # simulator shifts the object crop, which differ by a few % for fractional corners.
    pos = np.round(np.asarray(data.positions_px, np.float64))
    frames = C.forward(FarField(torch.as_tensor(pos), obj.shape, data.frame_shape), obj, probe)
    data = dataclasses.replace(data, frames=frames, positions_px=pos)
    job = {"epochs": 1, "object_shape": list(data.object_shape), "seed": 0}
    arrays = {"frames": np.asarray(frames, np.float32), "positions_px": pos, "probe": probe,
              "object_init": obj}
    with tempfile.TemporaryDirectory() as out:
        raw = ptyrad_engine._params(job, arrays, dict(ptyrad_engine.DEFAULTS), out)
        params = PtyRADParams(**raw).model_dump()
        for k in ("meas_params", "probe_params", "pos_params", "obj_params"):
            params["init_params"][k] = raw["init_params"][k]
        solver = PtyRADSolver(params, device="cpu", seed=0)
        model = PtychoModel(solver.init.init_variables, params["model_params"], device="cpu")
    return model, solver, data


def _positions(model):
    return (model.crop_pos + model.opt_probe_pos_shifts).detach().double().numpy()


def test_positions_are_kept(model_and_data):
    model, solver, data = model_and_data
    np.testing.assert_allclose(_positions(model), data.positions_px, atol=1e-5)
    with torch.no_grad():
        solver.constraint_fn(model, 1)  # what every epoch ends with
    np.testing.assert_allclose(_positions(model), data.positions_px, atol=1e-5)


def test_forward_model_matches_frames(model_and_data):
    model, _, data = model_and_data
    with torch.no_grad():
        y = model(torch.arange(data.n_frames)).double().numpy()
    f = np.asarray(data.frames, np.float64)
    c = (y * f).sum() / (y * y).sum()  # PtyRAD rescales the data and the probe
    rel = np.linalg.norm(c * y - f, axis=(1, 2)) / np.linalg.norm(f, axis=(1, 2))
    assert rel.max() < 1e-5, rel.max()
