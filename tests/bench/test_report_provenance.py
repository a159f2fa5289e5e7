"""Provenance: every result records the code state, and the report will not mix states."""

from __future__ import annotations

import json
import math

import pytest

from bench import report
from bench._machine import machine_info


def test_machine_info_records_commit_load_and_peer_versions():
    m = machine_info()
    assert len(m["git"]["commit"]) == 40 and isinstance(m["git"]["dirty"], bool)
    assert len(m["load_average"]) == 3
    assert {"pty-chi", "ptyrad", "ptylab", "torch"} <= set(m["versions"])


def test_machine_info_records_the_cpu_features_that_set_rnfs_precision(monkeypatch):
    """Hosts that share a CPU name differ in bfloat16 products, so RNF's ``"auto"``
    precision differs: the record names the features, as the engine reads them."""
    from ptytasks.fields import phasor_kernels

    monkeypatch.setattr(phasor_kernels, "cpu_flags",
                        lambda: frozenset({"fma", "avx2", "avx512_bf16"}))
    assert machine_info()["cpu_simd"] == ["avx2", "fma", "avx512_bf16"]
    monkeypatch.setattr(phasor_kernels, "cpu_flags", lambda: frozenset())
    assert machine_info()["cpu_simd"] is None


def _write(folder, name, commit, dirty=False):
    d = {"suite": name.split("-")[0], "machine": {"git": {"commit": commit, "dirty": dirty}}}
    (folder / f"{name}.json").write_text(json.dumps(d))


def test_report_refuses_results_of_two_commits(tmp_path):
    _write(tmp_path, "quality-cpu", "a" * 40)
    _write(tmp_path, "speed-cpu", "b" * 40)
    with pytest.raises(report.MixedCommits, match="quality-cpu.json: aaaaaaaaaa.*--allow-mixed"):
        report.write_report(tmp_path)
    text = report.write_report(tmp_path, allow_mixed=True).read_text()
    assert "Mixed code states" in text and "(code: bbbbbbbbbb)" in text


def test_report_of_one_commit_names_it_and_flags_uncommitted_code(tmp_path):
    _write(tmp_path, "quality-cpu", "a" * 40, dirty=True)
    _write(tmp_path, "speed-cpu", "a" * 40, dirty=True)
    text = report.write_report(tmp_path).read_text()
    assert "Uncommitted code" in text and "(code: aaaaaaaaaa+dirty)" in text


def test_report_reads_only_the_suites_own_files(tmp_path):
    """A record that only shares a suite's prefix (``pipeline-rnf-star.json``: one timed
    run, another commit) is neither a table of the report nor a code state it mixes."""
    _write(tmp_path, "pipeline-cpu", "a" * 40)
    d = {"suite": "pipeline-rnf-star", "machine": {"git": {"commit": "b" * 40, "dirty": False}}}
    (tmp_path / "pipeline-rnf-star.json").write_text(json.dumps(d))
    text = report.write_report(tmp_path).read_text()  # one code state: no refusal
    assert "pipeline-rnf-star" not in text and "(code: aaaaaaaaaa)" in text


def test_report_shows_the_grid_best_engine_per_cell_in_both_views(tmp_path):
    """The yardstick in the report: per cell the best engine at equal epochs and at equal
    time with median [min-max], from the full grid (its quick subset only without one)."""

    def stats(med, lo, hi):
        return {"median": med, "min": lo, "max": hi}

    def eng(ep, t):
        return {"equal_epochs": stats(*ep), "equal_time": stats(*t)}

    grid = {"suite": "grid", "quick": False, "device": "cpu",
            "machine": {"git": {"commit": "a" * 40, "dirty": False}},
            "summary": {"ff-25-1e6": {"engines": {
                "rnf": eng((0.03, 0.02, 0.05), (0.3, 0.2, 0.4)),
                "rpie": eng((0.04, 0.03, 0.05), (0.04, 0.03, 0.06)),
                "epie": eng((0.09, 0.08, 0.1), (float("inf"), 0.1, float("inf")))}}}}  # fmt: skip
    (tmp_path / "grid-cpu.json").write_text(json.dumps(grid))
    quick = {**grid, "quick": True, "summary": {"smoke-cell": grid["summary"]["ff-25-1e6"]}}
    (tmp_path / "grid-cpu-quick.json").write_text(json.dumps(quick))
    text = report.write_report(tmp_path).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| ff-25-1e6"))
    assert row.split("|")[2].strip() == "rnf 0.0300 [0.0200-0.0500]"  # best, equal epochs
    assert row.split("|")[4].strip() == "rpie 0.0400 [0.0300-0.0600]"  # best, equal time
    assert "smoke-cell" not in text  # the full grid, not its quick subset
    # the headline leads with the yardstick's verdict: RNF over the best other engine
    head = text.split("## Yardstick grid")[0]
    assert "equal epochs | lowest in **1 of 1** cells; ff-25-1e6 0.75 (rpie)" in head
    assert "equal time | lowest in **0 of 1** cells; ff-25-1e6 7.50 (rpie)" in head


def test_report_headline_reads_the_yardstick_not_a_tagged_subset_and_skips_failed_engines(
        tmp_path):
    """``grid-cpu-<tag>.json`` (a cell subset or an off-grid cell) is never the yardstick,
    and an engine with no finite median is not named the best other."""

    def eng(ep):
        s = {"median": ep, "min": ep, "max": ep}
        return {"equal_epochs": s, "equal_time": s}

    def grid(summary, tag=None):
        return {"suite": "grid", "quick": False, "device": "cpu", "args": {"tag": tag},
                "machine": {"git": {"commit": "a" * 40, "dirty": False}}, "summary": summary}

    yard = {"ff-25-1e6": {"engines": {"rnf": eng(0.05), "epie": eng(float("nan")),
                                      "rpie": eng(0.02)}}}  # fmt: skip
    tagged = {"off-grid": {"engines": {"rnf": eng(0.01), "rpie": eng(0.02)}}}
    (tmp_path / "grid-cpu.json").write_text(json.dumps(grid(yard)))
    (tmp_path / "grid-cpu-another-offgrid.json").write_text(json.dumps(grid(tagged, "x")))
    head = report.write_report(tmp_path).read_text().split("## Yardstick grid")[0]
    assert "equal epochs | lowest in **0 of 1** cells; ff-25-1e6 2.50 (rpie)" in head
    assert "off-grid" not in head


def test_an_untracked_module_makes_the_tree_dirty(tmp_path, monkeypatch):
    """A new, not yet added module a benchmark imported is not in the commit: dirty.
    Other untracked files (stores, notes) are not code."""
    import subprocess

    import bench._machine as machine

    monkeypatch.delenv("PTYFLOW_GIT_COMMIT", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (["init", "-q"], ["config", "user.email", "a@b"], ["config", "user.name", "a"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run(["git", "add", "a.py"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "a"], cwd=repo, check=True)
    monkeypatch.setattr(machine, "REPO", repo)
    (repo / "notes.txt").write_text("n")
    assert machine.git_state()["dirty"] is False
    (repo / "new_engine.py").write_text("y = 2\n")
    assert machine.git_state()["dirty"] is True


def test_a_timed_run_reports_only_its_own_metrics(tmp_path):
    """run_timed: a failed run reports no metrics (an earlier run's table beside the store
    was read as this run's), and says whether the store existed (a resumed run)."""
    import json

    from bench.run_timed import main

    store = tmp_path / "r.zarr"
    store.mkdir()
    (tmp_path / "r_metrics.csv").write_text("metric,value\ncomplex_error,0.01\n")
    out = tmp_path / "t.json"
    code = main(["--out", str(out), "--", str(tmp_path / "missing.cxi"), "-o", str(store)])
    doc = json.loads(out.read_text())
    assert code == 2 and doc["metrics"] == {} and doc["store_existed"] is True
    assert not (tmp_path / "r_metrics.csv").exists()


def test_the_grid_headline_counts_every_cell_and_names_failures():
    """A failed engine or RNF's own failure (or nothing within the time budget) stays in
    the count: four cells read 'of 4', never a clean '3 of 3'."""
    from bench.report import _grid_headline

    def cell(rnf, **others):
        eng = {"rnf": rnf, **others}
        return {"engines": {k: {"equal_epochs": {"median": v}, "equal_time": {"median": v}}
                            for k, v in eng.items()}}  # fmt: skip

    nan, inf = float("nan"), float("inf")
    summary = {"c1": cell(0.1, epie=0.2), "c2": cell(inf, epie=0.2),
               "c3": cell(nan, epie=0.2), "c4": cell(0.3, epie=nan, rpie=0.4)}
    rows = _grid_headline("g.json", summary)
    assert all("lowest in **2 of 4**" in r for r in rows), rows
    assert "c3 RNF failed" in rows[0] and "[epie failed]" in rows[0]


def test_a_failed_positions_run_is_not_dropped_from_the_median():
    from bench.bench_positions import summarise

    ok = summarise([{"affine_rms_px": 1.0}, {"affine_rms_px": 2.0}, {"affine_rms_px": 3.0}])
    assert ok["affine_rms_px_median"] == 2.0 and ok["n_failed"] == 0
    one_failed = summarise([{"affine_rms_px": 1.0}, {"ok": False}, {"affine_rms_px": 3.0}])
    assert one_failed["n_failed"] == 1 and math.isnan(one_failed["affine_rms_px_median"])


def test_the_quality_headline_does_not_call_rnf_ahead_of_an_engine_that_failed():
    from bench.suite_quality import headline

    rows = [{"dose": 1e6, "fraction": 0.25, "engine": e, "ok": ok, "complex_error": err}
            for e, ok, err in (("rnf", True, 0.1), ("rpie", True, 0.2),
                               ("ptychi-lsqml", False, float("nan")))]
    h = headline(rows, {"fractions": [0.25], "doses": [1e6]})["per_dose"]["1000000.0"]
    assert h["failed"] == ["ptychi-lsqml"]
    assert h["rnf_ahead_of_all"] is None and h["rnf_ahead_of_all_peers"] is None
    q = {"headline": {"fraction": 0.25, "per_dose": {"1000000.0": h}}}
    text = "\n".join(report.headline_rows({"quality": [("q.json", q)]}))
    assert "not known" in text and "ptychi-lsqml failed" in text and "**yes**" not in text
