"""The yardstick grid (bench/suite_grid.py): tuning on disjoint cases, frozen settings,
resumable runs, refusal to mix commits, median/range and equal-time summaries."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from bench import grid_cells as G
from bench import grid_tune as T
from bench import suite_grid as S

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_tuning_and_test_cases_are_disjoint():
    tune_seeds = {s for s, _ in G.TUNING_CASES}
    test_seeds = {s for s, _ in G.TEST_CASES}
    assert not tune_seeds & test_seeds
    assert not {o for _, o in G.TUNING_CASES} & {o for _, o in G.TEST_CASES}
    # tuned at a dose no test cell uses
    test_doses = {c.dose for c in G.CELLS}
    assert all(c.dose not in test_doses for c in G.TUNING_CELLS.values())
    # the same budget for every engine
    assert len({len(v) for v in G.CANDIDATES.values()}) == 1
    assert all(v[0] == {} for v in G.CANDIDATES.values()), "defaults come first"


def test_extra_cells_are_off_the_yardstick_but_runnable_by_name():
    names = {c.name for c in G.CELLS}
    assert G.EXTRA_CELLS and not names & {c.name for c in G.EXTRA_CELLS}
    # test doses only: nothing run there can have been tuned on
    assert {c.dose for c in G.EXTRA_CELLS} <= {c.dose for c in G.CELLS}
    assert G.cell("ff-50-1e6").keep == 0.5
    with pytest.raises(KeyError, match="ff-50-1e4"):
        G.cell("ff-51-1e4")


def test_off_grid_probe_cells_simulate_their_probe_and_leave_the_yardstick_keys():
    """The off-grid probe cells reach the simulator (an electron probe is not the zone
    plate), and the yardstick's cells keep the dict they are cached and reported under."""
    assert "sim" not in G.cell("ff-100-1e4").to_dict()
    c = G.cell("ff-100-1e4-electron")
    assert c.to_dict()["sim"] == {"probe": "electron"} and c.name not in {x.name for x in G.CELLS}
    _, full = G.simulate_case(c, 1, "camera")
    zone, _ = G.simulate_case(G.cell("ff-100-1e4"), 1, "camera")
    assert not np.allclose(np.abs(full.ground_truth["probe"]),
                           np.abs(zone.ground_truth["probe"]), atol=1e-3)


def test_choose_takes_the_lowest_median_and_the_first_on_ties():
    assert T.choose([0.3, 0.1, 0.2]) == 1
    assert T.choose([0.1, 0.1, 0.2]) == 0
    assert T.choose([math.inf, 0.4, math.nan]) == 1
    assert T.choose([math.nan, math.inf]) == 0
    # a failed tuning run makes its candidate the worst, not the best of the rest
    assert T._median([0.1, float("nan")]) == math.inf


def test_equal_time_takes_the_last_snapshot_within_the_budget():
    curves = {"fast": [{"seconds": 1.0, "error": 0.5}, {"seconds": 2.0, "error": 0.2}],
              "slow": [{"seconds": 1.5, "error": 0.4}, {"seconds": 8.0, "error": 0.01}],
              "late": [{"seconds": 3.0, "error": 0.0}]}  # fmt: skip
    et = S.equal_time(curves, 2.0)
    assert et["fast"] == 0.2 and et["slow"] == 0.4 and math.isinf(et["late"])
    # nothing yet within the budget ranks last but is not a failure
    st = S._stats([0.2, math.inf, 0.3])
    assert st["median"] == 0.3 and st["n_failed"] == 0 and st["n_not_reached"] == 1
    assert S._fmt(st) == "0.3000 [0.2000-none yet]"


def _row(cell, seed, engine, err, total, curve, commit="a"):
    return {"cell": cell, "seed": seed, "engine": engine, "ok": True, "complex_error": err,
            "frc_resolution": 0.3, "times": {"compute_s": total, "epoch_s_median": total / 10},
            "curve": curve, "code": {"commit": commit, "dirty": False}}  # fmt: skip


def test_summary_median_range_and_both_views():
    rows = []
    for seed, (ef, es) in zip((1, 2, 3), ((0.30, 0.10), (0.20, 0.12), (0.25, 0.50)), strict=True):
        rows.append(_row("c", seed, "fast", ef, 1.0, [{"seconds": 1.0, "error": ef}]))
        rows.append(_row("c", seed, "slow", es, 9.0,
                         [{"seconds": 0.9, "error": 0.9}, {"seconds": 9.0, "error": es}]))
    s = S.summarise(rows)["c"]
    assert s["engines"]["fast"]["equal_epochs"] == {"median": 0.25, "min": 0.2, "max": 0.3,
                                                    "n_not_reached": 0,
                                                    "n": 3, "n_failed": 0}
    assert s["engines"]["slow"]["equal_epochs"]["median"] == 0.12
    assert s["best_equal_epochs"] == "slow"
    assert s["engines"]["slow"]["equal_time"]["median"] == 0.9
    assert s["best_equal_time"] == "fast"
    # a failed case is reported, never dropped from the median
    rows[1] = {**rows[1], "ok": False, "complex_error": float("nan")}
    s = S.summarise(rows)["c"]
    assert s["engines"]["slow"]["equal_epochs"]["n_failed"] == 1
    assert s["best_equal_epochs"] == "fast"


def test_a_run_that_ended_without_a_finite_error_sets_no_time_budget():
    """PIE stops early on divergence and still returns (ok, NaN error, a short time): that
    run must not become the case's equal-time budget, which would leave the others none."""
    rows = [_row("c", 1, "fast", 0.3, 1.0, [{"seconds": 1.0, "error": 0.3}]),
            _row("c", 1, "slow", 0.1, 9.0, [{"seconds": 0.9, "error": 0.9},
                                            {"seconds": 9.0, "error": 0.1}]),
            _row("c", 1, "diverged", float("nan"), 0.05, [])]  # fmt: skip
    s = S.summarise(rows)["c"]
    assert s["engines"]["fast"]["equal_time"]["median"] == 0.3
    assert s["engines"]["slow"]["equal_time"]["median"] == 0.9


def test_mixed_commits_are_refused_unless_allowed():
    rows = [_row("c", 1, "e", 0.1, 1, []), _row("c", 2, "e", 0.1, 1, [], commit="b")]
    with pytest.raises(S.MixedCommits):
        S.check_commits(rows, allow_mixed=False)
    assert len(S.check_commits(rows, allow_mixed=True)) == 2
    assert len(S.check_commits(rows[:1], allow_mixed=False)) == 1


@pytest.fixture
def tiny_grid(monkeypatch, tmp_path):
    """Two ptyflow engines on a 32 px, 12-position far-field cell, 3 epochs."""
    monkeypatch.setitem(G.SETTINGS, "farfield", {"frame_size": 32, "n_positions": 12,
                                                 "overlap": 0.6})
    monkeypatch.setattr(G, "CELLS", (G.Cell("ff-tiny", "farfield", 1.0, 1e6),))
    monkeypatch.setattr(G, "TUNING_CELLS", {"farfield": G.Cell("tune-tiny", "farfield", 1.0, 1e5)})
    monkeypatch.setattr(G, "EPOCHS", {"farfield": 3})
    monkeypatch.setattr(G, "ENGINES", {"farfield": ("epie", "rpie")})
    monkeypatch.setattr(G, "CANDIDATES", {"epie": ({}, {"alpha": 0.5}),
                                          "rpie": ({}, {"alpha": 0.3})})
    monkeypatch.setattr(G, "TEST_CASES", ((1, "camera"), (2, "coins")))
    monkeypatch.setattr(G, "TUNING_CASES", ((101, "astronaut"),))
    calls = []
    real = G.run_case_engine

    def counting(*a, **k):
        calls.append(a[4])
        return real(*a, **k)

    monkeypatch.setattr(G, "run_case_engine", counting)
    args = argparse.Namespace(
        tune=False, modalities=None, cells=None, cache=tmp_path / "cache",
        settings_file=tmp_path / "s.json",
        allow_mixed=False, quick=False, device="cpu", threads=1, out=tmp_path, tag=None,
        engines=None, no_peers=True, settings=None, budget="standard",
        tune_cell=None)  # fmt: skip
    return args, calls


def test_grid_tunes_freezes_runs_and_resumes(tiny_grid):
    args, calls = tiny_grid
    with pytest.raises(SystemExit, match="no frozen settings"):
        S.run(args)
    args.tune = True
    S.run(args)
    frozen = json.loads(args.settings_file.read_text())
    assert set(frozen["settings"]["farfield"]) == {"epie", "rpie"}
    assert frozen["scores"]["farfield"]["epie"]
    assert frozen["tuned_with"]["farfield"]["epie"]["commit"]
    assert len(calls) == 4  # 2 engines x 2 candidates x 1 tuning case
    # retuning one engine leaves the other entries of the file as they were
    frozen["settings"]["farfield"]["rpie"] = {"alpha": 0.3}
    args.settings_file.write_text(json.dumps(frozen))
    args.modalities, args.engines = ["farfield"], ["epie"]
    S.run(args)
    again = json.loads(args.settings_file.read_text())
    assert again["settings"]["farfield"]["rpie"] == {"alpha": 0.3}
    assert again["settings"]["farfield"]["epie"] == frozen["settings"]["farfield"]["epie"]
    args.modalities, args.engines = None, None
    frozen = again
    args.tune = False
    out = S.run(args)
    assert len(calls) == 8  # 2 engines x 2 test cases, with the frozen settings
    assert {r["seed"] for r in out["rows"]} == {1, 2}
    for r in out["rows"]:
        assert r["settings"] == frozen["settings"]["farfield"][r["engine"]]
        assert r["code"]["commit"] and r["curve"] and r["ok"]
    assert out["summary"]["ff-tiny"]["best_equal_epochs"] in ("epie", "rpie")
    assert (args.out / "grid-cpu.md").read_text().count("| epie |") == 1
    # the summary can be recomputed from the JSON alone
    doc = S.resummarise(args.out / "grid-cpu.json")
    assert doc["summary"] == out["summary"] and doc["summary_code"]["commit"]
    # resumed: everything cached, nothing runs again
    S.run(args)
    assert len(calls) == 8
    # an override reaches the engine on top of the frozen setting, is recorded and stated;
    # the tuning and an unknown engine refuse it
    args.settings = ['rpie:{"alpha": 0.7}']
    out = S.run(args)
    assert len(calls) == 10  # rpie again (new key), epie from the cache
    assert out["overrides"] == {"rpie": {"alpha": 0.7}}
    assert {r["settings"]["alpha"] for r in out["rows"] if r["engine"] == "rpie"} == {0.7}
    assert "Not the frozen settings" in (args.out / "grid-cpu.md").read_text()
    args.settings = ['rpei:{"alpha": 0.7}']
    with pytest.raises(SystemExit, match="unknown engine"):
        S.run(args)
    args.settings, args.tune = ['rpie:{"alpha": 0.7}'], True
    with pytest.raises(SystemExit, match="--tune"):
        S.run(args)
    args.settings, args.tune = None, False
    # a changed candidate list makes the frozen file stale
    G.CANDIDATES["epie"] = ({}, {"alpha": 0.4})
    with pytest.raises(SystemExit, match="candidates"):
        S.run(args)


def test_the_wide_budget_crosses_each_candidate_with_three_probe_steps():
    """``--budget wide``: nine candidates per engine, the standard three among them, the
    defaults first; the probe step's named default is the engine's own."""
    from bench.peers import ptychi_engine, ptyrad_engine
    from ptytasks.engines.options import PIEOptions
    from ptytasks.engines.pine import PINEOptions
    from ptytasks.engines.rnf import RNFOptions

    wide = G.candidates("wide")
    assert set(wide) == set(G.CANDIDATES) == set(G.PROBE_STEP)
    for e, cands in wide.items():
        assert len(cands) == 9 and cands[0] == {}
        assert all(c in cands for c in G.CANDIDATES[e])
        key, base = G.PROBE_STEP[e]
        assert sorted(c.get(key, base) for c in cands) == sorted([base / 3, base, 3 * base] * 3)
    own = {"rnf": RNFOptions().lr_probe_scale, "epie": PIEOptions(variant="epie").steps()[1],
           "rpie": PIEOptions(variant="rpie").steps()[1], "pine": PINEOptions().steps()[1],
           "ptychi-rpie": ptychi_engine.DEFAULTS["rpie"]["probe_alpha"],
           "ptychi-lsqml": ptychi_engine.DEFAULTS["lsqml"]["probe_step"],
           "ptyrad": ptyrad_engine.DEFAULTS["probe_lr"]}
    assert {e: b for e, (_, b) in G.PROBE_STEP.items()} == own
    assert G.candidates() is G.CANDIDATES
    with pytest.raises(ValueError, match="budget"):
        G.candidates("huge")


def test_a_wide_budget_file_is_tuned_frozen_and_checked_as_such(tiny_grid, tmp_path,
                                                                monkeypatch):
    args, calls = tiny_grid
    args.tune, args.budget = True, "wide"
    S.run(args)
    frozen = json.loads(args.settings_file.read_text())
    assert frozen["budget"] == "wide" and len(frozen["scores"]["farfield"]["epie"]) == 6
    assert len(calls) == 12  # 2 engines x 2 x 3 candidates x 1 tuning case
    assert frozen["candidates"] == json.loads(json.dumps(G.candidates("wide")))
    args.tune = False
    out = S.run(args)  # the wide file is accepted as frozen settings
    assert {r["settings"] == frozen["settings"]["farfield"][r["engine"]] for r in out["rows"]} \
        == {True}
    frozen["budget"] = "standard"  # its candidates are not the standard ones
    args.settings_file.write_text(json.dumps(frozen))
    with pytest.raises(SystemExit, match="standard budget"):
        S.run(args)
    frozen["budget"] = "huge"
    args.settings_file.write_text(json.dumps(frozen))
    with pytest.raises(SystemExit, match="field 'budget'"):
        S.run(args)
    # the wide tuning never overwrites the standard file the grid reads by default (a
    # stand-in here, so that a failure cannot overwrite the real one)
    standard = tmp_path / "grid_settings.json"
    standard.write_text("{}")
    monkeypatch.setattr(S, "SETTINGS_FILE", standard)
    args.tune, args.settings_file = True, standard
    with pytest.raises(SystemExit, match="own --settings-file"):
        S.run(args)
    assert standard.read_text() == "{}"


def test_a_cell_tuned_file_tunes_in_that_cells_geometry_and_runs_only_it(tiny_grid, tmp_path,
                                                                         monkeypatch):
    """``--tune-cell``: the tuning cases simulated in a grid cell's geometry (an audit of the
    one tuning cell per modality); the file says so and refuses to run another cell."""
    args, calls = tiny_grid
    monkeypatch.setattr(G, "CELLS", (*G.CELLS, G.Cell("ff-tiny-sparse", "farfield", 0.5, 1e6)))
    seen = []
    real = S.run_cached

    def spy(cache, kind, cell, *a, **k):
        seen.append((kind, cell.name))
        return real(cache, kind, cell, *a, **k)

    monkeypatch.setattr(S, "run_cached", spy)
    args.tune, args.tune_cell = True, "ff-tiny"
    with monkeypatch.context() as m:  # another modality's tuning cell the file must not name
        m.setattr(G, "TUNING_CELLS", {**G.TUNING_CELLS, "nearfield": G.Cell("nf-x", "nearfield",
                                                                            1.0, 1e5)})
        S.run(args)
    frozen = json.loads(args.settings_file.read_text())
    assert frozen["tuned_on_cell"] == "ff-tiny"
    assert frozen["tuning_cells"] == {"farfield": G.cell("ff-tiny").to_dict()}
    assert set(seen) == {("tune", "ff-tiny")} and len(calls) == 4
    args.tune, args.cells = False, ["ff-tiny"]
    assert {r["cell"] for r in S.run(args)["rows"]} == {"ff-tiny"}
    args.cells = ["ff-tiny-sparse"]
    with pytest.raises(SystemExit, match="tuned on cell ff-tiny"):
        S.run(args)
    # a cell tunes its own modality's engines only: another modality is refused, not ignored
    args.tune, args.modalities = True, ["nearfield"]
    with pytest.raises(SystemExit, match="contradicts"):
        S.run(args)
    args.modalities = None
    # retuned without the cell, the file's cell-tuned entries do not stand
    args.tune, args.tune_cell, args.cells = True, None, None
    S.run(args)
    again = json.loads(args.settings_file.read_text())
    assert again["tuned_on_cell"] is None
    assert again["tuning_cells"]["farfield"]["name"] == "tune-tiny"
    # and a cell-tuned file never overwrites the standard one
    standard = tmp_path / "grid_settings.json"
    standard.write_text("{}")
    monkeypatch.setattr(S, "SETTINGS_FILE", standard)
    args.tune_cell, args.settings_file = "ff-tiny", standard
    with pytest.raises(SystemExit, match="--tune-cell: name its own --settings-file"):
        S.run(args)
    assert standard.read_text() == "{}"


def test_fourier_scores_against_the_truth_within_the_synthetic_band():
    """FPM can only determine the object's spectrum inside the union of the pupil windows;
    the score's truth keeps exactly that band (scanning cells: the truth unchanged)."""
    import numpy as np

    from ptytasks.physics.fft import fft2c

    c = G.Cell("f", "fourier", 1.0, None, scan="leds")
    data, full = G.simulate_case(c, 1, "camera")
    truth = full.ground_truth["object"]
    tb = G.score_truth(data, full)
    spec = fft2c(__import__("torch").as_tensor(truth.astype(np.complex128))).numpy()
    spec_b = fft2c(__import__("torch").as_tensor(tb.astype(np.complex128))).numpy()
    inside = np.abs(spec_b) > 1e-6 * np.abs(spec_b).max()
    # the synthetic aperture NA + NA_illum = 0.1 + 0.3 (simulate's defaults) as a disc
    disc = np.pi / 4 * ((0.1 + 0.3) * 2 * data.pixel_size / data.wavelength) ** 2
    assert inside.mean() == pytest.approx(disc, rel=0.1), (inside.mean(), disc)
    np.testing.assert_allclose(spec_b[inside], spec[inside], rtol=1e-3, atol=1e-3)
    ny, nx = truth.shape
    assert inside[ny // 2, nx // 2] and not inside[0, 0]  # DC inside, the corner outside
    ff = G.Cell("x", "farfield", 1.0, None)
    d2, f2 = G.simulate_case(ff, 1, "camera")
    assert G.score_truth(d2, f2) is f2.ground_truth["object"] or np.array_equal(
        G.score_truth(d2, f2), f2.ground_truth["object"])


def test_scanning_cases_sit_on_whole_pixel_corners():
    """No engine is scored on its own sub-pixel model: corners are whole pixels and the
    frames are the forward model's at those corners (noise-free cell: exactly)."""
    import numpy as np

    from ptytasks.modalities import model_for
    from ptytasks.simulate import _common as SC

    for modality in ("farfield", "nearfield"):
        data, full = G.simulate_case(G.Cell("x", modality, 0.5, None), 1, "camera")
        assert data.meta["corners"] == "whole-pixel"
        np.testing.assert_array_equal(data.positions_px, np.round(data.positions_px))
        gt = full.ground_truth
        expected = SC.forward(model_for(data), np.asarray(gt["object"]),
                              np.asarray(gt["probe"]))  # fmt: skip
        np.testing.assert_allclose(data.frames, expected, rtol=1e-4, atol=1e-3)


def test_one_factor_driver_runs_engine_seed_replicates_and_resumes(tmp_path):
    """``bench/rnf_data_term.py --engine-seeds 2``: each case under the case seed and the
    case seed + 1000 (the seed reaches the engine: the errors differ), and a rerun adds
    nothing (finished rows are kept, keyed by engine seed too)."""
    from bench import rnf_data_term as D

    out = tmp_path / "rows.json"
    args = ["tune-fourier-1e5", "[{}]", str(out), "--epochs", "1", "--engine-seeds", "2"]
    D.main(args)
    rows = json.loads(out.read_text())["rows"]
    seeds = sorted((r["seed"], r["engine_seed"]) for r in rows)
    assert seeds == sorted((s, s + k) for s, _ in G.TUNING_CASES for k in (0, 1000))
    for s, _ in G.TUNING_CASES:
        e = {r["engine_seed"]: r["error"] for r in rows if r["seed"] == s}
        assert e[s] != e[s + 1000]
    D.main(args)
    assert len(json.loads(out.read_text())["rows"]) == len(rows)


def test_the_default_engine_is_also_read_at_the_best_other_engines_run_time():
    """Issue #19's wall-time view: the default engine's error when the best *other* engine
    (lowest median final error; not the fastest) has finished its run, and the ratio to
    that engine's final error, case by case."""
    subject = S.C.SUBJECT
    rows = []
    for seed in (1, 2, 3):
        rows.append(_row("c", seed, "fast", 0.5, 1.0, [{"seconds": 1.0, "error": 0.5}]))
        rows.append(_row("c", seed, "best", 0.2, 4.0, [{"seconds": 4.0, "error": 0.2}]))
        rows.append(_row("c", seed, subject, 0.1, 9.0,
                         [{"seconds": 0.9, "error": 0.9}, {"seconds": 3.0 + seed / 2, "error": 0.3},
                          {"seconds": 9.0, "error": 0.1}]))  # fmt: skip
    a = S.summarise(rows)["c"]["subject_at_best_time"]
    assert a["engine"] == "best" and a["budget_s"] == [4.0, 4.0, 4.0]
    # seeds 1, 2 reach 0.3 by 3.5 / 4.0 s; seed 3 only at 4.5 s, so it reads 0.9 there
    assert a["error"]["median"] == 0.3 and a["error"]["max"] == 0.9
    assert abs(a["ratio"]["median"] - 1.5) < 1e-12
    assert "at the compute time of the best other engine's run (best" in S.markdown(
        {"commits": [], "device": "cpu", "quick": False, "settings_file": "x.json", "rule": "r",
         "test_cases": [], "summary": {"c": S.summarise(rows)["c"]},
         "cells": {"c": {"modality": "farfield", "scan": "fermat", "keep": 0.25, "dose": 1e4}}})


def test_the_run_cache_separates_devices_and_threads():
    """A GPU or multi-thread run at the same commit never reuses the CPU one-thread rows
    (the cache key held neither); the CPU default keeps the key it had."""
    cell = G.CELLS[0]
    args = dict(kind="test", cell=cell, case=(1, "camera"), engine="rpie", settings={},
                epochs=10, code={"commit": "abc", "dirty": False})
    plain = S._key(**args)
    assert S._key(**args, where=S._where(argparse.Namespace(device="cpu", threads=None))) == plain
    cuda = S._key(**args, where=S._where(argparse.Namespace(device="cuda", threads=None)))
    two = S._key(**args, where=S._where(argparse.Namespace(device="cpu", threads=2)))
    assert len({plain, cuda, two}) == 3


def test_a_fresh_held_out_set_can_replace_the_test_cases():
    """--test-cases scores on cases no decision has touched; tuning seeds are refused."""
    assert S.parse_cases(None) == G.TEST_CASES
    assert S.parse_cases("240:moon,241:cell") == ((240, "moon"), (241, "cell"))
    with pytest.raises(ValueError, match="tuning case"):
        S.parse_cases(f"{G.TUNING_CASES[0][0]}:moon")
    with pytest.raises(ValueError, match="object kind"):
        S.parse_cases("240:nope")


def test_cells_are_taken_space_or_comma_separated():
    from bench.suite_grid import cell_names

    assert cell_names(["ff-25-1e6,ff-15-1e6", "nf-100-1e6"], False) == [
        "ff-25-1e6", "ff-15-1e6", "nf-100-1e6"]
    assert cell_names(None, True) == list(G.QUICK_CELLS)
    assert cell_names([], False) == [c.name for c in G.CELLS]
