"""The reprocess-facility flow, run twice by the process worker through its deployment
over a data root with a good, a changed and a corrupt dataset."""

from __future__ import annotations

import json

import anyio
import pytest
import yaml

from tests.deploy.helpers import tiny_farfield, tiny_params, using_api

pytestmark = pytest.mark.timeout(900)


async def _report(flow_run_id) -> list[dict]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    (art,) = [a for a in arts if a.key == "facility-report"]
    return json.loads(art.data) if isinstance(art.data, str) else art.data


def _run(settings: dict):
    from prefect.deployments import run_deployment

    run = run_deployment(
        "reprocess-facility/reprocess-facility",
        parameters={"settings": settings},
        timeout=600,
        poll_interval=2,
    )
    return run, {r["name"]: r for r in anyio.run(_report, run.id)}


def test_facility_reprocesses_only_changed_and_reports_corrupt(prefect_server, tmp_path):
    from storage.store import RunStore

    raw, out = tmp_path / "raw", tmp_path / "processed"
    (raw / "day2").mkdir(parents=True)
    tiny_farfield(raw / "a.cxi", seed=1)
    tiny_farfield(raw / "b.cxi", seed=2)
    (raw / "day2" / "bad.cxi").write_bytes(b"not an HDF5 file" * 100)
    (raw / "notes.txt").write_text("ignored: no dataset pattern matches")
    defaults = tiny_params("-", "-")
    del defaults["input"], defaults["store"]
    config = tmp_path / "facility.yaml"
    config.write_text(yaml.safe_dump(defaults))
    settings = {"data_root": str(raw), "output_root": str(out), "config": str(config),
                "min_age_seconds": 0, "max_concurrent": 2}  # fmt: skip

    with using_api(prefect_server["url"]):
        run1, rep1 = _run(settings)
        # A dataset failed in this run: the run says so, after finishing the others.
        assert run1.state.is_failed(), run1.state
        assert "day2/bad.cxi" in run1.state.message
        assert {k: v["action"] for k, v in rep1.items()} == {
            "a.cxi": "processed",
            "b.cxi": "processed",
            "day2/bad.cxi": "failed",
        }
        assert rep1["a.cxi"]["reason"] == "new"
        ledger = json.loads((out / "ptyflow-facility.json").read_text())
        assert ledger["a.cxi"]["status"] == "ok" and ledger["day2/bad.cxi"]["status"] == "failed"
        a_store, b_store = out / "a.cxi.zarr", out / "b.cxi.zarr"
        a_done = RunStore(a_store, "r").marker("raw")["completed_at"]
        b_time = RunStore(b_store, "r").marker("metrics")["completed_at"]
        assert RunStore(b_store, "r").is_complete("metrics")

        tiny_farfield(raw / "b.cxi", seed=3)  # new content for b
        run2, rep2 = _run(settings)

    assert run2.state.is_completed(), run2.state  # the corrupt file is no new failure
    assert {k: v["action"] for k, v in rep2.items()} == {
        "a.cxi": "skip",
        "b.cxi": "processed",
        "day2/bad.cxi": "failed-before",
    }
    assert rep2["b.cxi"]["reason"] == "content changed"
    assert "failed before, unchanged" in rep2["day2/bad.cxi"]["reason"]
    assert RunStore(a_store, "r").marker("raw")["completed_at"] == a_done  # untouched
    assert RunStore(b_store, "r").marker("metrics")["completed_at"] != b_time  # redone
