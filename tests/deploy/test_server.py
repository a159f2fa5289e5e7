"""Against a real Prefect server: the init script's deployments, their parameter schema,
a pipeline run triggered through the API and executed by a process worker, and the
facility schedule."""

from __future__ import annotations

import subprocess
import sys
import time

import anyio
import pytest

from flows.serve import REPO_ROOT
from tests.deploy.helpers import tiny_farfield, tiny_params, using_api

pytestmark = pytest.mark.timeout(900)


async def _deployment(name: str):
    from prefect import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(name)


def test_init_script_deploys_all_and_is_idempotent(prefect_server):
    assert "work pool 'ptyflow-process': created" in prefect_server["init"].stdout
    again = subprocess.run(
        [sys.executable, "deployments/init.py", "--api-url", prefect_server["url"]],
        env=prefect_server["env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "'ptyflow-process': exists" in again.stdout
    with using_api(prefect_server["url"]):
        for name in ("pipeline/pipeline", "reprocess-facility/reprocess-facility",
                     "gigapixel-coded/gigapixel-coded"):  # fmt: skip
            dep = anyio.run(_deployment, name)
            assert dep.work_pool_name == "ptyflow-process"
            # pull: the worker runs the code in place, in this checkout.
            step = dep.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
            assert step["directory"] == str(REPO_ROOT)


def test_pipeline_parameter_schema_is_typed_and_described(prefect_server):
    with using_api(prefect_server["url"]):
        dep = anyio.run(_deployment, "pipeline/pipeline")
    schema = dep.parameter_openapi_schema
    assert schema["required"] == ["params"]
    defs = schema["definitions"]
    pp = defs["PipelineParams"]["properties"]
    assert {"input", "store", "engine", "tiling", "cluster", "subsample"} <= set(pp)
    assert pp["input"]["type"] == "string" and pp["input"]["description"]
    eng = defs["EngineParams"]["properties"]
    assert eng["engine"]["enum"] == ["rnf", "epie", "rpie", "pine", "learned"]
    assert eng["epochs"]["type"] == "integer" and eng["epochs"]["minimum"] == 1
    assert eng["epochs"]["default"] == 50
    assert eng["learn_probe"]["type"] == "boolean"
    assert defs["EngineParams"]["description"]  # the section's docstring
    for name in ("EngineParams", "TilingParams", "ClusterParams", "SubsampleParams"):
        props = defs[name]["properties"]
        assert all(p.get("description") for p in props.values()), name
    assert defs["ClusterParams"]["properties"]["kind"]["enum"] == [
        "local", "local_cuda", "address", "none"]  # fmt: skip


def test_pipeline_run_through_the_api_by_a_process_worker(prefect_server, tmp_path):
    from prefect.deployments import run_deployment

    from storage.store import RunStore

    data = tiny_farfield(tmp_path / "tiny.cxi")
    store = tmp_path / "tiny.zarr"
    with using_api(prefect_server["url"]):
        t0 = time.monotonic()
        run = run_deployment("pipeline/pipeline",
                             parameters={"params": tiny_params(data, store)},
                             timeout=600, poll_interval=2)  # fmt: skip
        elapsed = time.monotonic() - t0
    log = prefect_server["logs"][1].read_text()[-3000:]
    assert run.state.is_completed(), f"{run.state}\n{log}"
    s = RunStore(store, "r")
    assert s.is_complete("metrics") and s.is_complete("mosaic")
    assert s.root["metrics"].attrs["values"]["truth_phase_ssim"] > 0.5
    assert (tmp_path / "tiny_phase.png").exists()
    print(f"deployment run: {elapsed:.0f} s")


def test_facility_schedule_creates_scheduled_runs(prefect_server):
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async def scheduled(dep_id):
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id]))
            )
            return [r for r in runs if r.state and r.state.is_scheduled()]

    with using_api(prefect_server["url"]):
        dep = anyio.run(_deployment, "reprocess-facility/reprocess-facility")
        assert dep.schedules and dep.schedules[0].schedule.cron == "15 * * * *"
        # One facility scan at a time; an overlapping scheduled run is cancelled.
        assert dep.global_concurrency_limit and dep.global_concurrency_limit.limit == 1
        assert dep.concurrency_options.collision_strategy == "CANCEL_NEW"
        t0, runs = time.monotonic(), []
        while time.monotonic() - t0 < 180 and not runs:
            runs = anyio.run(scheduled, dep.id)
            time.sleep(2)
    assert runs, "the scheduler made no runs for the cron schedule"
    assert all(r.expected_start_time.minute == 15 for r in runs)
    settings = runs[0].parameters["settings"]
    assert settings["data_root"] == f"{prefect_server['facility']}/raw"
