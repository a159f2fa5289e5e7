"""Detector artefacts (split wide pixels, hot pixels) are found in pixel-detector frames at
ingest and, with the file's own bad pixels, left out of every engine's fit
(``ptytasks.detector``, ``ptytasks.engines.pie_state.detector_mask_of``). Small and fast."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ptytasks.detector import artefact_mask
from ptytasks.engines.options import PIEOptions
from ptytasks.engines.pie import reconstruct_pie
from ptytasks.engines.registry import run_engine
from ptytasks.simulate import simulate
from storage.store import RunStore


def _with_artefacts(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    """Frames as a hybrid pixel detector with a chip boundary at rows 20/21 and columns
    40/41 (each boundary pixel double-wide, its counts split over two virtual pixels) and a
    hot pixel at (5, 50) would give them."""
    rng = np.random.default_rng(seed)
    f = np.array(frames, np.float64, copy=True)
    for a in (19, 21):  # rows 19-20 and 21-22 were one physical pixel each
        tot = f[:, a] + f[:, a + 1]
        f[:, a], f[:, a + 1] = np.floor(tot / 2), np.ceil(tot / 2)
    for a in (39, 41):
        tot = f[:, :, a] + f[:, :, a + 1]
        f[:, :, a], f[:, :, a + 1] = np.floor(tot / 2), np.ceil(tot / 2)
    f[:, 5, 50] = rng.poisson(40 * max(1.0, np.median(f.mean(0))), len(f))
    return f.astype(np.float32)


@pytest.fixture(scope="module")
def ff():
    return simulate("farfield", seed=0, dose=1e5)


def test_split_pixels_and_hot_pixels_are_found(ff):
    m, report = artefact_mask(_with_artefacts(ff.frames))
    assert report["split_rows"] == [[19, 20], [21, 22]]
    assert report["split_cols"] == [[39, 40], [41, 42]]
    assert report["hot_pixels"] == [[5, 50]]
    expect = np.ones(ff.frame_shape, bool)
    expect[19:23] = expect[:, 39:43] = False
    expect[5, 50] = False
    np.testing.assert_array_equal(m, expect)


@pytest.mark.parametrize("cluster", [[(0, 0), (0, 1)], [(0, 29), (0, 30), (0, 31)],
                                     [(63, 62), (63, 63)], [(40, 63)]])
def test_hot_pixels_on_the_frame_edge_are_found(ff, cluster):
    """Hot pixels in a corner or on an edge, alone or side by side, are compared with the
    neighbours that exist (3 or 5): an edge-replicating pad counted a corner pixel 3 times
    among its own 8 neighbours and its edge neighbour twice, so a hot pair in a corner (or
    three in a row on an edge) set its own median and went unmasked."""
    rng = np.random.default_rng(1)
    f = np.array(ff.frames, np.float64, copy=True)
    for y, x in cluster:
        f[:, y, x] = rng.poisson(40 * max(1.0, np.median(f.mean(0))), len(f))
    m, report = artefact_mask(f.astype(np.float32))
    assert report["hot_pixels"] == sorted([list(p) for p in cluster]), report
    assert report["masked"] == len(cluster) and not any(m[p] for p in cluster)


@pytest.mark.parametrize("modality", ["farfield", "nearfield"])
def test_no_artefacts_in_simulated_counts(modality):
    """No false alarm on the simulator's Poisson frames, from a few photons per pixel to
    many, nor on noise-free (non-integer) frames."""
    for dose in (1e3, 1e5, 1e7, 1e9, None):
        for seed in (0, 1, 2):
            d = simulate(modality, seed=seed, dose=dose)
            m, report = artefact_mask(d.frames)
            assert m is None and report["masked"] == 0, (modality, dose, seed, report)


def test_ingest_masks_artefacts_beside_the_files_bad_pixels(ff, tmp_path):
    from storage.cxi import write_cxi

    d = ff.subset(np.arange(ff.n_frames))
    d.frames = _with_artefacts(ff.frames)
    bad = np.ones(d.frame_shape, bool)
    bad[60, 3] = False  # the file's own dead pixel
    d.meta = {**d.meta, "mask": bad}
    write_cxi(tmp_path / "scan.cxi", d)
    on = RunStore.create(tmp_path / "on.zarr")
    on.ingest(tmp_path / "scan.cxi")
    m = on.read_array("raw/mask")
    assert not m[60, 3] and not m[19:23].any() and not m[:, 39:43].any() and not m[5, 50]
    assert m.sum() == m.size - (1 + 4 * 64 + 4 * 64 - 16 + 1)
    assert on.root["raw"].attrs["detector_artefacts"]["hot_pixels"] == [[5, 50]]
    assert "mask" in on.read_raw().meta  # what the engines are given
    # switched off in the same store: raw is written again (a changed setting never
    # reuses the old step), with the file's mask alone
    on.ingest(tmp_path / "scan.cxi", detector_artefacts=False)
    np.testing.assert_array_equal(on.read_array("raw/mask"), bad)
    assert on.root["raw"].attrs["detector_artefacts"] is None


@pytest.mark.parametrize("engine", ["rnf", "rpie", "pine"])
def test_masked_pixels_do_not_matter(ff, engine):
    """Pixels outside the dataset's mask are left out of the data term: shuffling their
    values within each frame (the frame's totals, which set global scales, unchanged)
    leaves the reconstruction as it was, and changes it without the mask."""
    mask = np.ones(ff.frame_shape, bool)
    mask[19:23] = False
    mask[5, 50] = False
    rng = np.random.default_rng(1)
    garbage = np.array(ff.frames, np.float32, copy=True)
    for f in garbage:
        f[~mask] = rng.permutation(f[~mask])
    # float64: frame statistics then agree to the last bit whatever the pixels' order
    kw = {"epochs": 2, "seed": 3, **({"dtype": "float64"} if engine == "rnf" else {})}
    sub = np.arange(24)  # a few frames: fast

    def run(frames, with_mask):
        d = ff.subset(sub)
        d.frames = frames[sub]
        d.meta = {**d.meta, **({"mask": mask} if with_mask else {})}
        return np.asarray(run_engine(engine, d, kw, probe_prior=ff.ground_truth["probe"]).object)

    clean = np.asarray(ff.frames, np.float32)
    a, b = run(clean, True), run(garbage, True)
    assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max()
    c, ref = run(garbage, False), run(clean, False)
    assert np.abs(c - ref).max() > 1e-3 * np.abs(ref).max()


@pytest.mark.parametrize("modality", ["farfield", "nearfield"])
def test_blind_probes_and_direct_pie_calls_honour_the_mask(modality):
    """The mask travels with the data: ``reconstruct_pie`` called directly enforces it, and
    the blind probe estimates (a file without a probe) fill masked pixels of the mean
    pattern from their neighbours, so a hot pixel or dead line puts no spike or dark line
    into the probe. Masked values shuffled within each frame change nothing; without the
    mask they do."""
    from ptytasks.engines import blind_probe as bp
    from ptytasks.engines.options import PIEOptions
    from ptytasks.engines.pie import reconstruct_pie

    d0 = simulate(modality, seed=0, dose=1e5)
    mask = np.ones(d0.frame_shape, bool)
    mask[19:23] = False
    mask[5, 50] = False
    clean = np.array(d0.frames, np.float32, copy=True)
    clean[:, 5, 50] += 500.0  # a hot pixel
    rng = np.random.default_rng(2)
    garbage = clean.copy()
    for f in garbage:
        f[~mask] = rng.permutation(f[~mask])

    def data(frames, with_mask):
        d = d0.subset(np.arange(d0.n_frames))
        d.frames, d.probe = frames, None
        d.meta = {**d.meta, **({"mask": mask} if with_mask else {})}
        return d

    def blind(d):
        if modality == "farfield":
            return bp.blind_farfield_probe(d, reconstruct_pie, fractions=(0.26, 0.44),
                                           trial_frames=16, epochs=2)[0]  # fmt: skip
        return bp.blind_nearfield_probe(d, trial_frames=8, max_epochs=3)[0]

    def direct(d):
        return np.asarray(reconstruct_pie(d, PIEOptions(iterations=2, seed=3),
                                          probe_prior=d0.ground_truth["probe"]).object)  # fmt: skip

    for run in (blind, direct):
        a, b = run(data(clean, True)), run(data(garbage, True))
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), run.__name__
        c, ref = run(data(garbage, False)), run(data(clean, False))
        assert np.abs(c - ref).max() > 1e-3 * np.abs(ref).max(), run.__name__


def _beamstop(zero: bool):
    """30 frames whose central 6 x 6 detector pixels (6.8 % of the counts) are masked, their
    readings left as measured or zeroed (a beamstop)."""
    d = simulate("farfield", seed=0, dose=1e6, frame_size=32, n_positions=30)
    m = np.ones(d.frame_shape, bool)
    m[13:19, 13:19] = False
    out = d.subset(np.arange(d.n_frames))
    f = np.array(d.frames, np.float32)
    if zero:
        f[:, ~m] = 0
    out.frames, out.meta = f, {**d.meta, "mask": m}
    return out


def test_position_searches_and_the_probe_scale_ignore_masked_readings():
    """What masked pixels read changes nothing: the PIE grid search, the annealed position
    search and the probe's rescale to the counts see only the pixels the mask keeps (the
    searches moved frames ~1-2 px off for a beamstop's zeros; the rescale shrank the probe
    by the masked share of the counts)."""
    from ptytasks.engines.options import PositionCorrectionOptions
    from ptytasks.engines.position_search import PositionSearchOptions, search_positions

    probe = np.asarray(_beamstop(False).ground_truth["probe"])
    opts = PIEOptions(iterations=16, dtype="complex128",
                      position_correction=PositionCorrectionOptions(start=5, search_every=10))
    runs = [reconstruct_pie(_beamstop(z), opts, probe_prior=probe) for z in (False, True)]
    np.testing.assert_allclose(runs[0].positions_px, runs[1].positions_px, atol=1e-9)
    o = PositionSearchOptions(radius=2, epochs=3, prior_px=2.0)
    found = [search_positions(_beamstop(z), probe, o) for z in (False, True)]
    np.testing.assert_allclose(found[0], found[1], atol=1e-6)
    d = _beamstop(False)
    scaled = reconstruct_pie(d, PIEOptions(iterations=0, dtype="complex128"), probe_prior=probe)
    free = reconstruct_pie(d, PIEOptions(iterations=0, dtype="complex128"), probe_prior=probe,
                           detector_mask=np.ones(d.frame_shape, bool))
    assert np.sum(np.abs(scaled.probe) ** 2) == pytest.approx(np.sum(np.abs(free.probe) ** 2),
                                                               rel=0.02)


def test_pine_refuses_slices():
    from ptytasks.engines.pine import PINEOptions

    with pytest.raises(ValueError, match="n_slices"):
        PINEOptions(n_slices=3)


@pytest.mark.parametrize("case", ["nearfield_blind", "coded_start", "fourier_start",
                                  "explicit_mask"])
def test_starts_do_not_read_what_masked_pixels_hold(case, monkeypatch):
    """Every start an engine makes without a prior (near-field blind probe, coded
    back-propagated mean, Fourier lowest-NA image) is the same whatever the masked pixels
    read -- a hot pixel as bright as it likes, or dead -- and a mask given to
    ``reconstruct_pie`` is the one its probe start uses."""
    from functools import partial

    from ptytasks.engines import blind_probe as bp
    from ptytasks.engines.fourier_pie import reconstruct_fourier_pie
    from ptytasks.engines.options import FourierPIEOptions, PIEOptions
    from ptytasks.engines.pie import reconstruct_pie

    modality = {"nearfield_blind": "nearfield", "coded_start": "coded",
                "fourier_start": "fourier", "explicit_mask": "nearfield"}[case]
    kw = {"fourier": {"image_size": 32}, "coded": {"frame_size": 32, "n_positions": 16}}
    d0 = simulate(modality, seed=0, dose=1e5, **kw.get(modality, {}))
    short = partial(bp.blind_nearfield_probe, trial_frames=8, max_epochs=3)
    monkeypatch.setattr(bp, "blind_nearfield_probe", short)  # the start, quickly
    mask = np.ones(d0.frame_shape, bool)
    mask[10, 12] = False
    mask[3:5] = False
    out = []
    for value in (0.0, 1e4 * float(np.mean(d0.frames))):  # dead, then very hot
        d = d0.subset(np.arange(d0.n_frames))
        d.frames = np.array(d0.frames, np.float32, copy=True)
        d.frames[:, ~mask] = value
        d.probe = None
        if case != "explicit_mask":
            d.meta = {**d.meta, "mask": mask}
        if case == "nearfield_blind":
            probe, rep = bp.blind_nearfield_probe(d)
            out.append(np.concatenate([np.ravel(probe), [rep["loss_first"]]]))
        elif case == "fourier_start":
            out.append(reconstruct_fourier_pie(d, FourierPIEOptions(iterations=0)).object)
        else:
            run = partial(reconstruct_pie, d, PIEOptions(iterations=0 if case == "explicit_mask"
                                                         else 2, seed=3))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the short blind estimate may warn
                res = run(detector_mask=mask) if case == "explicit_mask" else run()
            out.append(res.probe if case == "explicit_mask" else res.object)
    a, b = (np.asarray(x) for x in out)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
