"""The ``pipeline`` flow itself holds the run store's lock (deployments and the facility
flow start it without the CLI): refused while another process holds the store, re-entered
when this process does (``ptyflow run`` takes the lock before starting the flow)."""

from __future__ import annotations

import os

import pytest

from flows import pipeline as pipeline_module
from flows.params import PipelineParams
from storage.lock import StoreLock, StoreLockedError, holder
from tests.lock_holder import lock_held_elsewhere


@pytest.fixture
def body(monkeypatch):
    """Replace the flow's stages: record that they ran, and who held the lock meanwhile."""
    ran = []
    monkeypatch.setattr(pipeline_module, "_pipeline",
                        lambda p: ran.append(holder(p.store)) or {"store": p.store})  # fmt: skip
    return ran


def test_flow_refused_while_another_process_holds_the_store(tmp_path, body):
    store = tmp_path / "run.zarr"
    p = PipelineParams.from_mapping({"input": "x.cxi", "store": str(store)})
    with lock_held_elsewhere(store, "other-run") as proc:
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}.*other-run"):
            pipeline_module.pipeline.fn(p)  # the flow's function, without a Prefect API
        assert body == []  # no stage ran
    pipeline_module.pipeline.fn(p)
    assert body[-1]["pid"] == os.getpid()  # the flow held it while its stages ran
    assert holder(store) is None  # and gave it back


def test_flow_reenters_the_lock_of_its_command(tmp_path, body):
    store = tmp_path / "run.zarr"
    p = PipelineParams.from_mapping({"input": "x.cxi", "store": str(store)})
    with StoreLock(store, command="ptyflow run x.cxi"):
        pipeline_module.pipeline.fn(p)
        assert body[-1]["command"] == "ptyflow run x.cxi"  # the command's record, kept
        assert holder(store)["pid"] == os.getpid()  # the flow's exit did not release it
    assert holder(store) is None
