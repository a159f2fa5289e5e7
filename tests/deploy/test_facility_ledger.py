"""The facility ledger keeps every record: written per dataset as it starts and ends, a
corrupt ledger set aside and rebuilt, a killed process's dataset recorded as ``died`` and
retried alone a bounded number of times. Plain functions, no Prefect server."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from flows.facility import (
    Decision,
    FacilityParams,
    Ledger,
    batches,
    decide,
    run_dataset,
)
from flows.facility_ledger import LEDGER

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a.cxi", "b.cxi", "c.cxi"):
        (raw / name).write_bytes(name.encode() * 100)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"engine": {"engine": "rpie"}}))
    return tmp_path


def _settings(root, **kw) -> FacilityParams:
    return FacilityParams(data_root=str(root / "raw"), output_root=str(root / "out"),
                          config=str(root / "cfg.yaml"), min_age_seconds=0,
                          pipeline_version="1.0", **kw)  # fmt: skip


def _by_name(ds: list[Decision]) -> dict[str, Decision]:
    return {d.name: d for d in ds}


def _on_disk(root) -> dict:
    return json.loads((root / "out" / LEDGER).read_text())


def test_each_dataset_is_recorded_when_it_starts_and_when_it_ends(root):
    s = _settings(root)
    ds = _by_name(decide(s, {}))
    led = Ledger(s.output_root)
    seen = {}

    def ok(params):
        seen["during"] = _on_disk(root)[Path(params.input).name]["status"]
        return {"metrics": {"rmse": 0.1}}

    assert run_dataset(ds["a.cxi"], led, "1.0", run=ok)["metrics"] == {"rmse": 0.1}
    assert seen["during"] == "running"
    assert _on_disk(root)["a.cxi"]["status"] == "ok"  # on disk before b even starts

    def boom(params):
        raise MemoryError("tile 3 needs 80 GiB")

    with pytest.raises(MemoryError):  # re-raised: the Prefect task shows Failed
        run_dataset(ds["b.cxi"], led, "1.0", run=boom)
    disk = _on_disk(root)
    assert disk["a.cxi"]["status"] == "ok"
    assert (disk["b.cxi"]["status"], disk["b.cxi"]["attempts"]) == ("failed", 1)
    assert disk["b.cxi"]["error"] == "MemoryError: tile 3 needs 80 GiB"
    # A raising dataset is not retried while unchanged; the others carry on.
    again = _by_name(decide(s, Ledger(s.output_root).entries))
    assert again["b.cxi"].action == "failed-before"
    assert again["c.cxi"].action == "process"


@pytest.mark.parametrize("damage", [b'{"a.cxi": {"status": "ok", "fing', b"\x00\xff\xfe",
                                    b'["not", "a", "mapping"]'])  # fmt: skip
def test_a_corrupt_ledger_is_set_aside_and_rebuilt(root, damage, caplog):
    s = _settings(root)
    (root / "out").mkdir()
    (root / "out" / LEDGER).write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="flows.facility_ledger"):
        led = Ledger(s.output_root)
    assert led.entries == {}
    (kept,) = led.set_aside
    assert kept.name.startswith(f"{LEDGER}.corrupt-") and kept.read_bytes() == damage
    assert "set aside" in caplog.text and kept.name in caplog.text
    ds = decide(s, led.entries)  # the scan goes on: every dataset is checked afresh
    assert {d.action for d in ds} == {"process"}
    led.record(ds[0], "ok", "1.0")
    assert set(_on_disk(root)) == {"a.cxi"}  # a valid ledger again


def test_a_mangled_entry_costs_only_that_dataset(root):
    s = _settings(root)
    (root / "out").mkdir()
    (root / "out" / LEDGER).write_text(json.dumps({"a.cxi": "garbage", "b.cxi": {}}))
    led = Ledger(s.output_root)
    assert led.entries == {"b.cxi": {}} and not led.set_aside


def test_two_writers_merge_their_entries(root):
    """A second process's ledger object (a manual run) must not erase the first one's."""
    s = _settings(root)
    ds = _by_name(decide(s, {}))
    first, second = Ledger(s.output_root), Ledger(s.output_root)
    first.record(ds["a.cxi"], "ok", "1.0")
    second.record(ds["b.cxi"], "ok", "1.0")
    first.record(ds["c.cxi"], "ok", "1.0")
    assert set(_on_disk(root)) == {"a.cxi", "b.cxi", "c.cxi"}


_CHILD = """
import json, os, signal, sys
from flows.facility import Decision, Ledger, run_dataset
todo, out = json.loads(sys.argv[1]), sys.argv[2]
led = Ledger(out)
def ok(params): return {}
def oom(params): os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer does
for d in todo:
    run_dataset(Decision(**d), led, "1.0", run=oom if d["name"] == "b.cxi" else ok)
"""


def _run_and_kill(root, ds: list[Decision]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    todo = json.dumps([asdict(d) for d in ds])
    return subprocess.run([sys.executable, "-c", _CHILD, todo, str(root / "out")], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_killed_process_is_recorded_as_died_and_retried_alone_boundedly(root, monkeypatch):
    monkeypatch.setattr("flows.facility._store_finished", lambda store: True)
    s = _settings(root, max_attempts=2)
    ds = _by_name(decide(s, {}))
    child = _run_and_kill(root, [ds["a.cxi"], ds["b.cxi"], ds["c.cxi"]])
    assert child.returncode == -signal.SIGKILL, child.stderr
    disk = _on_disk(root)
    assert disk["a.cxi"]["status"] == "ok"  # finished before the kill: kept
    assert disk["b.cxi"]["status"] == "running" and "c.cxi" not in disk

    led = Ledger(s.output_root)
    assert led.reap() == ["b.cxi"]
    b = _on_disk(root)["b.cxi"]
    assert (b["status"], b["attempts"]) == ("died", 1) and "out of memory" in b["error"]
    again = _by_name(decide(s, led.entries))
    assert {n: d.action for n, d in again.items()} == {
        "a.cxi": "skip", "b.cxi": "process", "c.cxi": "process"}  # fmt: skip
    assert "attempt 2 of 2" in again["b.cxi"].reason
    # b runs after c, alone: if it kills the process again, c is already recorded.
    plan = batches([again["b.cxi"], again["c.cxi"]], max_concurrent=4)
    assert [([d.name for d in g], n) for g, n in plan] == [(["c.cxi"], 4), (["b.cxi"], 1)]

    child = _run_and_kill(root, [again["c.cxi"], again["b.cxi"]])
    assert child.returncode == -signal.SIGKILL, child.stderr
    led = Ledger(s.output_root)
    led.reap()
    assert (led.entries["c.cxi"]["status"], led.entries["b.cxi"]["attempts"]) == ("ok", 2)
    third = _by_name(decide(s, led.entries))
    assert third["b.cxi"].action == "failed-before"  # max_attempts reached: not every hour
    assert "died in 2 attempts" in third["b.cxi"].reason
    assert third["c.cxi"].action == "skip"
    # New content (a fixed file) is a new dataset: attempts start again.
    (root / "raw" / "b.cxi").write_bytes(b"fixed" * 100)
    fixed = _by_name(decide(s, led.entries))["b.cxi"]
    assert (fixed.action, fixed.reason, fixed.died) == ("process", "content changed", 0)
    assert led.attempts_before(fixed, "1.0") == 0


@contextlib.contextmanager
def _running_elsewhere(root, identity: str | None = None):
    """``a.cxi`` recorded as running in another live process, under ``identity`` (default:
    that process's own); yields the settings and the ledger."""
    from flows.facility_ledger import process_identity

    s = _settings(root)
    ds = _by_name(decide(s, {}))
    led = Ledger(s.output_root)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        led.start(ds["a.cxi"], "1.0")
        led.update("a.cxi", dict(led.entries["a.cxi"], pid=other.pid,  # as if it ran it
                                 process=identity or process_identity(other.pid)))  # fmt: skip
        yield s, led
    finally:
        other.kill()
        other.wait()


def test_a_dataset_running_in_a_live_process_is_left_alone(root):
    with _running_elsewhere(root) as (s, led):
        assert led.reap() == []
        assert _by_name(decide(s, led.entries))["a.cxi"].action == "running"
    time.sleep(0.1)
    assert Ledger(s.output_root).reap() == ["a.cxi"]


def test_a_reused_pid_does_not_keep_a_dead_attempt_running(root):
    """After a reboot (or a long time) the recorded pid may belong to an unrelated live
    process: the entry records the process's identity (boot id, start time), so such an
    attempt is reaped, not left 'running' for as long as that process lives."""
    from flows.facility_ledger import process_identity

    if process_identity(os.getpid()) is None:
        pytest.skip("no /proc process identity on this system")
    with _running_elsewhere(root, identity="another-boot:12345") as (_, led):
        assert led.reap() == ["a.cxi"]  # the pid lives, but it is not the recorded process
