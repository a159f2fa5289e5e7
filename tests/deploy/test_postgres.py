"""A PostgreSQL-backed Prefect server, as a facility runs it (``ptyflow server start
--database-url postgresql+asyncpg://...``), taking two pipeline runs at once from two
``ptyflow run`` commands, and both runs recorded in the PostgreSQL database."""

from __future__ import annotations

import subprocess
import time

import anyio
import pytest
import yaml

from flows.serve import server_env, stop_process
from tests.deploy.helpers import CLI, start_cli_server, tiny_farfield, tiny_params, using_api
from tests.real_services import postgres_bin, postgres_cluster

# slow: a real PostgreSQL cluster and a Prefect server on it (~45 s on 2 cores)
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
PG_BIN = postgres_bin()
STARTUP_S = 240  # server start and migrations on an empty database: 20-90 s on 2 cores


async def _pipeline_runs():
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        return await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["pipeline"]))
        )


@pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL binaries (initdb, pg_ctl, createdb, "
                    "psql) not found on PATH or in /usr/lib/postgresql/*/bin")  # fmt: skip
def test_two_concurrent_pipeline_runs_on_a_postgres_backed_server(tmp_path):
    home = tmp_path / "home"
    server = None
    runs: list[subprocess.Popen] = []
    with postgres_cluster(PG_BIN) as pg:
        # As docs/operations.md says: the password in the environment, not on argv.
        env = server_env(
            home=home,
            extra={"OMP_NUM_THREADS": "1", "PREFECT_SERVER_DATABASE_PASSWORD": pg["password"]},
        )
        db_url = pg["url"].replace(pg["password"], "${PREFECT_SERVER_DATABASE_PASSWORD}")
        env.pop("PREFECT_API_URL", None)
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        log = tmp_path / "server.log"
        try:
            t0 = time.monotonic()
            server, url = start_cli_server(home, env, log, STARTUP_S, "--database-url", db_url)
            startup = time.monotonic() - t0

            # Two datasets, then two `ptyflow run` commands started together.
            client_env = {**env, "PREFECT_API_URL": url}
            client_env.pop("PREFECT_SERVER_DATABASE_PASSWORD")  # the server's secret only
            configs, stores = [], []
            for i in (1, 2):
                data = tiny_farfield(tmp_path / f"scan{i}.cxi", seed=i)
                stores.append(tmp_path / f"scan{i}.zarr")
                configs.append(tmp_path / f"scan{i}.yaml")
                # 30 iterations, not tiny_params' 5: runs of ~10 s, long enough to overlap.
                configs[-1].write_text(yaml.safe_dump(tiny_params(
                    data, stores[-1], engine={"engine": "rpie", "epochs": 30,
                                              "learn_probe": False})))  # fmt: skip
            t0 = time.monotonic()
            for i, cfg in enumerate(configs, 1):
                with open(tmp_path / f"run{i}.log", "wb") as out:
                    runs.append(subprocess.Popen([*CLI, "run", "--config", str(cfg)],
                                                 env=client_env, stdout=out,
                                                 stderr=subprocess.STDOUT,
                                                 start_new_session=True))  # fmt: skip
            for i, r in enumerate(runs, 1):
                rc = r.wait(timeout=600)
                assert rc == 0, (tmp_path / f"run{i}.log").read_text()[-3000:]
            both = time.monotonic() - t0

            with using_api(url):
                flow_runs = anyio.run(_pipeline_runs)
            assert len(flow_runs) == 2
            assert all(r.state.is_completed() for r in flow_runs), [r.state for r in flow_runs]
            assert sorted(r.parameters["params"]["store"] for r in flow_runs) == sorted(
                str(s) for s in stores
            )
            a, b = sorted(flow_runs, key=lambda r: r.start_time)
            assert b.start_time < a.end_time, "the two runs did not overlap"

            # The server kept them in PostgreSQL (no SQLite file), with their tile tasks.
            assert not (home / "prefect.db").exists()
            rows = pg["psql"](
                "SELECT flow_run.parameters->'params'->>'store', flow_run.state_type "
                "FROM flow_run JOIN flow ON flow.id = flow_run.flow_id "
                "WHERE flow.name = 'pipeline' ORDER BY 1"
            )
            assert rows.splitlines() == [f"{s}|COMPLETED" for s in sorted(map(str, stores))]
            tiles = pg["psql"]("SELECT name FROM task_run WHERE name ~ '^reconstruct-t[0-9]' "
                               "AND state_type = 'COMPLETED' ORDER BY 1")  # fmt: skip
            assert tiles.split() == [
                "reconstruct-t0000",
                "reconstruct-t0000",
                "reconstruct-t0100",
                "reconstruct-t0100",
            ], tiles
        finally:
            for r in runs:
                stop_process(r)
            stop_process(server)
    print(
        f"postgres-backed server healthy after {startup:.0f} s; "
        f"two concurrent runs took {both:.0f} s; overlap "
        f"{(a.end_time - b.start_time).total_seconds():.1f} s"
    )
