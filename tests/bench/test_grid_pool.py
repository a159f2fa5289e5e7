"""bench.grid_pool: later sources override earlier rows, filters and exclusions hold, and the
reading is RNF's median over the best other engine's, over the cases RNF ran."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import grid_pool


def _row(cell, engine, seed, err, commit="aaaaaaa"):
    return {"cell": cell, "engine": engine, "seed": seed, "ok": True, "complex_error": err,
            "frc_resolution": 0.3, "code": {"commit": commit},
            "times": {"compute_s": 10.0, "epoch_s_median": 0.1},
            "curve": [{"seconds": 5.0, "error": 2 * err}, {"seconds": 10.0, "error": err}]}


def _grid(path, rows):
    path.write_text(json.dumps({"rows": rows}))
    return {"file": str(path)}


@pytest.fixture
def sources(tmp_path):
    a = [_row("c", e, s, err) for s in (1, 2, 3)
         for e, err in (("rnf", 0.1 * s), ("rpie", 0.2 * s), ("epie", 0.4 * s))]
    a += [_row("d", "rnf", 1, 0.5), _row("d", "rpie", 1, 1.0)]
    b = [_row("c", "rpie", 2, 0.05, commit="bbbbbbb"), _row("c", "epie", 3, 9.0)]
    return [_grid(tmp_path / "a.json", a), _grid(tmp_path / "b.json", b)]


def test_later_sources_override_and_filters_apply(sources):
    rows = grid_pool.load_rows(sources)
    assert rows[("c", "rpie", 2)]["complex_error"] == 0.05  # b's rerun replaces a's row
    assert rows[("c", "rpie", 1)]["complex_error"] == pytest.approx(0.2)
    only = grid_pool.load_rows([sources[0], {**sources[1], "engines": ["epie"]}])
    assert only[("c", "rpie", 2)]["complex_error"] == pytest.approx(0.4)
    assert only[("c", "epie", 3)]["complex_error"] == 9.0
    by_commit = grid_pool.load_rows([sources[0], {**sources[1], "commits": ["bbbbbbb"]}])
    assert by_commit[("c", "epie", 3)]["complex_error"] == pytest.approx(1.2)
    cells = grid_pool.load_rows([{**sources[0], "cells": ["d"]}])
    assert {k[0] for k in cells} == {"d"}
    out = grid_pool.load_rows(sources, exclude={"c": [3]})
    assert ("c", "rnf", 3) not in out and ("c", "rnf", 2) in out and ("d", "rnf", 1) in out


def test_reading_is_rnf_over_the_best_other_engine(sources):
    r = grid_pool.reading(grid_pool.load_rows(sources), resamples=200)
    c = r["c"]
    # rpie after the override: 0.2, 0.05, 0.6 -> median 0.2; epie 0.4, 0.8, 9.0 -> 0.8
    assert c["cases"] == [1, 2, 3] and c["best_other"] == "rpie"
    assert c["medians"]["rnf"] == pytest.approx(0.2)
    assert c["ratio"] == pytest.approx(1.0)
    # case by case against the best engine of that case: 0.1/0.2, 0.2/0.05, 0.3/0.6
    assert c["per_case_rnf_over_best_of_case"] == [0.5, 4.0, 0.5]
    assert c["rnf_lowest_cases"] == 2
    lo, hi = c["bootstrap_90"]
    assert 0.5 <= lo <= c["ratio"] <= hi <= 4.0
    assert c["grid_summary"]["best_equal_epochs"] == "rnf"
    assert r["d"]["ratio"] == pytest.approx(0.5)


def test_an_engine_missing_a_case_is_listed_not_compared(tmp_path):
    rows = [_row("c", "rnf", s, 0.1) for s in (1, 2)] + [_row("c", "rpie", s, 0.2)
                                                        for s in (1, 2)]
    rows.append(_row("c", "ptyrad", 1, 0.01))  # best by far, but on one case of two
    r = grid_pool.reading(grid_pool.load_rows([_grid(tmp_path / "g.json", rows)]),
                          resamples=50)["c"]  # fmt: skip
    assert r["missing_engines"] == ["ptyrad"] and r["best_other"] == "rpie"
    assert r["ratio"] == pytest.approx(0.5)


def test_the_command_writes_the_reading(sources, tmp_path, capsys):
    spec = tmp_path / "sources.json"
    spec.write_text(json.dumps({"sources": sources[:1], "adopted_on": {"c": [1]}, "why": "t"}))
    out = tmp_path / "pool.json"
    doc = grid_pool.main([str(spec), "--extra", sources[1]["file"], "--exclude-adopted",
                          "--json", str(out)])  # fmt: skip
    assert json.loads(out.read_text())["cells"]["c"]["cases"] == [2, 3]
    assert doc["cells"]["c"]["medians"]["rpie"] == pytest.approx(np.median([0.05, 0.6]))
    assert "machine" in json.loads(out.read_text())
    assert "c: n=2" in capsys.readouterr().out
