"""The facility scan's decisions, without Prefect: new, changed, older version, changed
parameters, failed before, still being written, broken sidecar, broken shared config."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from flows.facility import Decision, FacilityParams, Ledger, decide, store_for
from flows.params import ConfigError


@pytest.fixture
def root(tmp_path):
    raw = tmp_path / "raw"
    (raw / "run2").mkdir(parents=True)
    (raw / "a.cxi").write_bytes(b"a" * 1000)
    (raw / "run2" / "b.h5").write_bytes(b"b" * 1000)
    (raw / ".hidden.cxi").write_bytes(b"x")
    (raw / "readme.txt").write_text("not a dataset")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"engine": {"engine": "rpie", "epochs": 3}}))
    old = time.time() - 3600
    for p in raw.rglob("*"):
        os.utime(p, (old, old))
    return tmp_path


def _settings(root, **kw) -> FacilityParams:
    return FacilityParams(data_root=str(root / "raw"), output_root=str(root / "out"),
                          config=str(root / "cfg.yaml"), **kw)  # fmt: skip


def _actions(ds: list[Decision]) -> dict:
    return {d.name: d.action for d in ds}


def _finish(s: FacilityParams, ds: list[Decision], status="ok") -> Ledger:
    led = Ledger(s.output_root)
    for d in ds:
        led.record(d, status, "0.1.0", "" if status == "ok" else "DataError: boom")
    return led


def test_new_datasets_are_processed_and_named_by_path(root):
    s = _settings(root, pipeline_version="0.1.0")
    ds = decide(s, {})
    assert _actions(ds) == {"a.cxi": "process", "run2/b.h5": "process"}
    assert all(d.reason == "new" for d in ds)
    assert ds[1].store == str(root / "out" / "run2" / "b.h5.zarr")
    assert ds[0].params["engine"]["epochs"] == 3 and ds[0].params["input"].endswith("a.cxi")


def test_unchanged_finished_datasets_are_skipped(root, monkeypatch):
    s = _settings(root, pipeline_version="0.1.0")
    led = _finish(s, decide(s, {}))
    monkeypatch.setattr("flows.facility._store_finished", lambda store: True)
    assert set(_actions(decide(s, led.entries)).values()) == {"skip"}
    # A deleted or half-written store is redone.
    monkeypatch.setattr("flows.facility._store_finished", lambda store: False)
    assert set(_actions(decide(s, led.entries)).values()) == {"process"}


def test_changed_content_version_and_parameters_trigger_reprocessing(root, monkeypatch):
    monkeypatch.setattr("flows.facility._store_finished", lambda store: True)
    s = _settings(root, pipeline_version="0.1.0")
    led = Ledger(s.output_root)
    _finish(s, decide(s, {}))
    led = Ledger(s.output_root)  # re-read from disk
    (root / "raw" / "a.cxi").write_bytes(b"A" * 1000)  # same size, new content
    os.utime(root / "raw" / "a.cxi", (time.time() - 3600,) * 2)
    ds = {d.name: d for d in decide(s, led.entries)}
    assert (ds["a.cxi"].action, ds["a.cxi"].reason) == ("process", "content changed")
    assert ds["run2/b.h5"].action == "skip"
    newer = _settings(root, pipeline_version="0.2.0")
    assert {d.reason for d in decide(newer, led.entries) if d.name == "run2/b.h5"} == {
        "pipeline 0.1.0 < 0.2.0"
    }
    older = _settings(root, pipeline_version="0.0.9")  # a downgrade does not redo work
    assert {d.action for d in decide(older, led.entries) if d.name == "run2/b.h5"} == {"skip"}
    (root / "cfg.yaml").write_text(yaml.safe_dump({"engine": {"engine": "rpie", "epochs": 4}}))
    assert {d.reason for d in decide(s, led.entries) if d.name == "run2/b.h5"} == {
        "parameters changed"
    }


def test_failed_datasets_are_reported_not_retried_unless_asked(root):
    s = _settings(root, pipeline_version="0.1.0")
    led = _finish(s, decide(s, {}), status="failed")
    ds = decide(s, led.entries)
    assert set(_actions(ds).values()) == {"failed-before"}
    assert "DataError: boom" in ds[0].reason
    retry = _settings(root, pipeline_version="0.1.0", retry_failed=True)
    assert set(_actions(decide(retry, led.entries)).values()) == {"process"}


def test_recent_files_wait_and_sidecars_override(root):
    (root / "raw" / "a.cxi.yaml").write_text("ingest: {z1: 0.00365}\n")
    os.utime(root / "raw" / "run2" / "b.h5")  # just written
    ds = {d.name: d for d in decide(_settings(root), {})}
    assert ds["run2/b.h5"].action == "wait"
    assert ds["a.cxi"].params["ingest"]["z1"] == 0.00365
    (root / "raw" / "a.cxi.yaml").write_text("engine: {engine: nope}\n")
    bad = {d.name: d for d in decide(_settings(root), {})}["a.cxi"]
    assert bad.action == "invalid" and "engine.engine" in bad.reason


def test_missing_or_invalid_shared_config_is_an_error(root):
    with pytest.raises(ConfigError, match="not found"):
        decide(_settings(root).model_copy(update={"config": str(root / "nope.yaml")}), {})
    (root / "cfg.yaml").write_text("engine: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        decide(_settings(root), {})
    (root / "cfg.yaml").write_text("cluster: {kind: gpu}\n")
    with pytest.raises(ConfigError, match="cluster.kind"):
        decide(_settings(root), {})
    with pytest.raises(ConfigError, match="not a folder"):
        decide(FacilityParams(data_root=str(root / "none"), output_root=str(root)), {})


def test_store_names_are_unique_per_file(root):
    s = _settings(root)
    assert store_for(s, Path("x/scan.cxi")) != store_for(s, Path("x/scan.h5"))
    # names differing only in dots and underscores: the old rule sent both to scan_1_h5.zarr
    assert store_for(s, Path("scan.1.h5")) != store_for(s, Path("scan_1.h5"))


def test_stores_keep_their_ledger_names_and_are_never_shared(root):
    """A dataset processed under the old naming keeps its store (no reprocessing of a
    whole facility for a rename); two datasets that would share one store are refused,
    each naming the other, instead of overwriting each other's results."""
    s = _settings(root, pipeline_version="0.1.0")
    first = decide(s, {})
    for d in first:  # as the old rule named them
        rel = Path(d.name)
        d.store = str(root / "out" / rel.parent / (rel.name.replace(".", "_") + ".zarr"))
    led = _finish(s, first)
    ds = {d.name: d for d in decide(s, led.entries)}
    assert ds["a.cxi"].store == str(root / "out" / "a_cxi.zarr")
    (root / "raw" / "scan.1.h5").write_bytes(b"c" * 1000)
    (root / "raw" / "scan_1.h5").write_bytes(b"d" * 1000)
    for p in ("scan.1.h5", "scan_1.h5"):
        os.utime(root / "raw" / p, (time.time() - 3600,) * 2)
    entries = dict(led.entries)
    entries["scan.1.h5"] = {"store": str(root / "out" / "scan_1_h5.zarr")}  # old-rule entry
    entries["scan_1.h5"] = {"store": str(root / "out" / "scan_1_h5.zarr")}
    ds = {d.name: d for d in decide(s, entries)}
    assert ds["scan.1.h5"].action == ds["scan_1.h5"].action == "refused"
    assert "scan_1.h5" in ds["scan.1.h5"].reason and "scan.1.h5" in ds["scan_1.h5"].reason
    fresh = {d.name: d for d in decide(s, {})}  # the new rule gives them two stores
    assert fresh["scan.1.h5"].store != fresh["scan_1.h5"].store
    assert {fresh[n].action for n in ("scan.1.h5", "scan_1.h5")} == {"process"}


def test_files_the_parameters_name_are_part_of_the_fingerprint(root, monkeypatch):
    """A positions file, a measured pupil or a surface reference named by the config or a
    sidecar, corrected in place, is a change: the store would keep the stale result."""
    monkeypatch.setattr("flows.facility._store_finished", lambda store: True)
    pos, pupil = root / "pos.csv", root / "pupil.npy"
    pos.write_text("0,0\n1,1\n")
    pupil.write_bytes(b"p" * 64)
    (root / "cfg.yaml").write_text(yaml.safe_dump(
        {"engine": {"engine": "rpie", "epochs": 3},
         "ingest": {"options": {"positions": str(pos)}},
         "calibration": {"pupil_file": str(pupil)}}))  # fmt: skip
    s = _settings(root, pipeline_version="0.1.0")
    led = _finish(s, decide(s, {}))
    assert set(_actions(decide(s, led.entries)).values()) == {"skip"}
    pos.write_text("0,0\n1,2\n")
    assert {d.reason for d in decide(s, led.entries)} == {"parameters changed"}
    pos.write_text("0,0\n1,1\n")
    led = _finish(s, decide(s, led.entries))
    pupil.write_bytes(b"q" * 64)
    assert {d.reason for d in decide(s, led.entries)} == {"parameters changed"}


def test_a_busy_store_is_retried_at_the_next_scan_not_failed(root, monkeypatch):
    """Another run or an export holding the store is not the dataset's failure: it is
    recorded ``busy`` and processed again at the next scan, not left ``failed-before``."""
    from flows.facility import run_dataset
    from storage.lock import StoreLockedError

    monkeypatch.setattr("flows.facility._store_finished", lambda store: True)
    s = _settings(root, pipeline_version="0.1.0")
    led = Ledger(s.output_root)
    d = next(d for d in decide(s, {}) if d.name == "a.cxi")

    def locked(params):
        raise StoreLockedError(params.store, {"pid": 1, "command": "ptyflow export"})

    out = run_dataset(d, led, "0.1.0", run=locked)
    assert "ptyflow export" in out["busy"]
    assert led.entries["a.cxi"]["status"] == "busy"
    again = {x.name: x for x in decide(s, Ledger(s.output_root).entries)}["a.cxi"]
    assert again.action == "process" and "busy" in again.reason
