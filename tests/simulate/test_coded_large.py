"""Large coded fields simulated straight to CXI, a block of frames at a time (small here)."""

from __future__ import annotations

import numpy as np
import torch

from ptytasks.modalities import model_for
from ptytasks.simulate import cells_object
from storage.cxi import read_cxi
from storage.simulated import simulate_coded_field


def test_field_is_written_block_by_block_and_matches_the_forward_model(tmp_path):
    path = tmp_path / "field.cxi"
    d = simulate_coded_field(path, frame_size=48, n_positions=5, dose=None, block=2, seed=1)
    assert path.is_file() and not list(tmp_path.glob(".coded-field-*"))  # scratch removed
    assert not isinstance(d.frames, np.ndarray)  # lazy: the frames stay in the file
    assert d.modality == "coded" and d.n_frames == 5 and d.frame_shape == (48, 48)
    assert min(d.object_shape) >= 48 + 2 * 8
    np.testing.assert_array_equal(d.positions_px, np.round(d.positions_px))  # whole pixels
    full = read_cxi(path)
    model = model_for(full, truth=True)
    gt = full.ground_truth
    with torch.no_grad():
        expected = model(torch.as_tensor(gt["object"]), torch.as_tensor(gt["probe"]),
                         torch.arange(5)).numpy()  # fmt: skip
    np.testing.assert_allclose(full.frames, expected, rtol=1e-4, atol=1e-6 * expected.max())
    np.testing.assert_array_equal(full.meta["surface"], gt["surface"])


def test_noise_is_seeded_per_block(tmp_path):
    a = simulate_coded_field(tmp_path / "a.cxi", frame_size=32, n_positions=3, block=1)
    b = simulate_coded_field(tmp_path / "b.cxi", frame_size=32, n_positions=3, block=1)
    fa, fb = np.asarray(a.frames), np.asarray(b.frames)
    np.testing.assert_array_equal(fa, fb)
    assert np.all(fa == np.round(fa)) and not np.array_equal(fa[0], fa[1])  # Poisson counts


def test_cells_object():
    o = cells_object((128, 96), seed=2)
    assert o.shape == (128, 96) and o.dtype == np.complex64
    phase, amp = np.angle(o), np.abs(o)
    assert 0.2 < np.mean(phase > 0.05) < 0.8  # cells and clear background
    assert amp.max() <= 1 and amp.min() > 0.1
    np.testing.assert_array_equal(cells_object((128, 96), seed=2), o)


def test_output_folder_is_created(tmp_path):
    # the scratch memory map lives beside the output, so a missing folder failed deep in
    # tempfile before this was made
    path = tmp_path / "new" / "deeper" / "field.cxi"
    d = simulate_coded_field(path, frame_size=32, n_positions=3, block=1)
    assert path.is_file() and d.n_frames == 3
