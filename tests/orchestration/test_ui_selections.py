"""What a data engineer does in the Dagster UI works: runs and backfills launched as the UI
launches them, through Dagster's GraphQL API, against `sluice dev` (webserver and daemon).

One data directory is built for the module (four days, loaded and built by the CLI's run);
the UI then materializes one mart's partition and everything for one partition, runs one
check alone, backfills one mart and the marts group over a range, and materializes one raw
asset alone. Each must succeed, build a range in one run, and
leave the serving snapshot republished by the run that followed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.settings import REPO_DIR, Settings
from serving.snapshot import connect_snapshot, read_version
from tests.conftest import built_data_dir

pytestmark = pytest.mark.slow

DAYS = 4
LAST = dt.date.today() - dt.timedelta(days=1)
FIRST = LAST - dt.timedelta(days=DAYS - 1)
MARTS = ["dau", "event_counts_daily", "funnel_daily", "retention_weekly", "revenue_daily"]
MARTS += ["wau_mau"]
# Budgets for the daemon: it launches queued runs, backfills and sensor ticks every few
# seconds; a dbt run of a few days takes seconds. Generous for a busy 2-core machine.
STARTUP_SECONDS = 120
RUN_SECONDS = 240

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs(limit: 20) { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""

RUN = """
query($id: ID!) {
  runOrError(runId: $id) {
    ... on Run {
      status jobName tags { key value }
      assetMaterializations { assetKey { path } partition }
      assetCheckEvaluations: eventConnection(limit: 500) {
        events { __typename ... on AssetCheckEvaluationEvent { evaluation { checkName success } } }
      }
    }
  }
}
"""

RUNS = """
query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId status jobName } } }
}
"""

WORKSPACE = """
{ workspaceOrError { ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } }
                          ... on PythonError { message } } } } } }
"""


@dataclass
class DagsterUI:
    url: str
    location: str
    repository: str
    settings: Settings

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        answer.raise_for_status()
        body = answer.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def asset_checks(self, path: list[str]) -> list[dict[str, Any]]:
        data = self.graphql(
            """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
                 ... on AssetNode { assetChecksOrError { ... on AssetChecks {
                   checks { name } } } } } }""",
            key={"path": path},
        )
        checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
        return [{"assetKey": {"path": path}, "name": check["name"]} for check in checks]

    def launch_run(self, paths: list[list[str]], tags: dict[str, str]) -> str:
        """As the UI's "Materialize" does: the implicit asset job, the selected assets and
        every check of them."""
        selector = {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": path} for path in paths],
            "assetCheckSelection": [c for path in paths for c in self.asset_checks(path)],
        }
        params = {
            "selector": selector,
            "mode": "default",
            "runConfigData": "{}",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = self.graphql(LAUNCH_RUN, params=params)["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def launch_backfill(self, paths: list[list[str]], days: list[dt.date]) -> str:
        """As the UI's "Launch backfill" over a range of partitions does."""
        params = {
            "assetSelection": [{"path": path} for path in paths],
            "partitionNames": [day.isoformat() for day in days],
            "fromFailure": False,
            "tags": [],
        }
        result = self.graphql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def wait_run(self, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            run = self.graphql(RUN, id=run_id)["runOrError"]
            if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not finish in {RUN_SECONDS} s")

    def wait_backfill(self, backfill_id: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            backfill = self.graphql(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
            if backfill["status"] not in ("REQUESTED", "CANCELING"):
                assert backfill["status"] == "COMPLETED_SUCCESS", backfill
                return [
                    self.wait_run(run["runId"]) | {"runId": run["runId"]}
                    for run in backfill["runs"]
                ]
            time.sleep(1)
        raise AssertionError(f"backfill {backfill_id} did not finish in {RUN_SECONDS} s")

    def wait_publish_after(self, run_id: str) -> str:
        """The run the snapshot sensor launched after ``run_id``; waits for its success."""
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            runs = self.graphql(RUNS, tags=[{"key": "sluice/after_run", "value": run_id}])
            results = runs["runsOrError"]["results"]
            if results:
                assert [r["jobName"] for r in results] == ["publish"], results
                finished = self.wait_run(results[0]["runId"])
                assert finished["status"] == "SUCCESS", finished
                return results[0]["runId"]
            time.sleep(1)
        raise AssertionError(f"no publish run followed run {run_id} in {RUN_SECONDS} s")

    def snapshot_version(self) -> str:
        with connect_snapshot(self.settings.serving_path) as con:
            return read_version(con).run_id


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def dagster_dev(settings: Settings) -> Iterator[DagsterUI]:
    """`sluice dev`, as `make dev` runs it, on this data directory, until the block ends."""
    port = _free_port()
    log = (settings.data_dir / "sluice-dev.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("sluice")), "dev"],
        cwd=REPO_DIR,
        env={**os.environ, **settings.subprocess_env(), "SLUICE_DAGSTER_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield _wait_until_loaded(f"http://127.0.0.1:{port}", settings, process)
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    with (
        built_data_dir(tmp_path_factory, "ui", LAST, DAYS, 150, seed=5) as settings,
        dagster_dev(settings) as ui,
    ):
        yield ui


def _wait_until_loaded(url: str, settings: Settings, process: subprocess.Popen) -> DagsterUI:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, (settings.data_dir / "sluice-dev.log").read_text()
        try:
            answer = httpx.post(f"{url}/graphql", json={"query": WORKSPACE}, timeout=10)
            entries = answer.json()["data"]["workspaceOrError"]["locationEntries"]
        except (httpx.HTTPError, KeyError, ValueError):
            time.sleep(1)
            continue
        loaded = entries[0]["locationOrLoadError"] if entries else None
        if loaded and loaded["__typename"] == "RepositoryLocation":
            repository = loaded["repositories"][0]["name"]
            return DagsterUI(url, entries[0]["name"], repository, settings)
        assert not loaded or loaded["__typename"] != "PythonError", loaded
        time.sleep(1)
    raise AssertionError(f"the Dagster UI did not load the code location in {STARTUP_SECONDS} s")


def _stop(process: subprocess.Popen) -> None:
    """Stop `sluice dev` and everything it started (webserver, daemon, code servers)."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def _materialized(run: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {("/".join(m["assetKey"]["path"]), m["partition"]) for m in run["assetMaterializations"]}


def _checks(run: dict[str, Any]) -> dict[str, bool]:
    events = run["assetCheckEvaluations"]["events"]
    return {
        e["evaluation"]["checkName"]: e["evaluation"]["success"]
        for e in events
        if e["__typename"] == "AssetCheckEvaluationEvent"
    }


def test_materialize_one_partition_of_one_mart(ui: DagsterUI) -> None:
    before = ui.snapshot_version()
    day = (LAST - dt.timedelta(days=1)).isoformat()
    run_id = ui.launch_run([["marts", "dau"]], {"dagster/partition": day})
    run = ui.wait_run(run_id)
    assert run["status"] == "SUCCESS"
    assert _materialized(run) == {("marts/dau", day)}
    checks = _checks(run)
    assert checks["unique_dau_event_date"] and checks["assert_marts_reconcile_with_fct_events"]
    assert checks["yesterday_partition_built"], "yesterday was built by the CLI's run"
    publish = ui.wait_publish_after(run_id)
    assert ui.snapshot_version() == publish != before


def test_materialize_all_for_one_partition(ui: DagsterUI) -> None:
    nodes = ui.graphql("{ assetNodes { assetKey { path } isMaterializable } }")["assetNodes"]
    paths = [node["assetKey"]["path"] for node in nodes if node["isMaterializable"]]
    run = ui.wait_run(ui.launch_run(paths, {"dagster/partition": FIRST.isoformat()}))
    assert run["status"] == "SUCCESS"
    assert {key for key, _ in _materialized(run)} == {"/".join(path) for path in paths}
    checks = _checks(run)
    assert len(checks) > 20 and all(checks.values()), checks


def test_execute_one_check_alone(ui: DagsterUI) -> None:
    check = {"assetKey": {"path": ["marts", "dau"]}, "name": "yesterday_partition_built"}
    selector = {
        "repositoryLocationName": ui.location,
        "repositoryName": ui.repository,
        "jobName": "__ASSET_JOB",
        "assetSelection": [],
        "assetCheckSelection": [check],
    }
    params = {"selector": selector, "mode": "default", "runConfigData": "{}"}
    launched = ui.graphql(LAUNCH_RUN, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = ui.wait_run(launched["run"]["runId"])
    assert run["status"] == "SUCCESS"
    assert _checks(run) == {"yesterday_partition_built": True}


def test_backfill_one_mart_over_a_range_is_one_run(ui: DagsterUI) -> None:
    days = [FIRST + dt.timedelta(days=i) for i in range(3)]
    runs = ui.wait_backfill(ui.launch_backfill([["marts", "dau"]], days))
    assert len(runs) == 1, "a range is one run with one dbt invocation"
    (run,) = runs
    assert run["status"] == "SUCCESS"
    tags = _tags(run)
    assert (
        tags["dagster/asset_partition_range_start"],
        tags["dagster/asset_partition_range_end"],
    ) == (
        days[0].isoformat(),
        days[-1].isoformat(),
    )
    assert _materialized(run) == {("marts/dau", day.isoformat()) for day in days}
    publish = ui.wait_publish_after(run["runId"])
    assert ui.snapshot_version() == publish


def test_backfill_the_marts_group_republishes_the_snapshot(ui: DagsterUI) -> None:
    days = [FIRST + dt.timedelta(days=i) for i in range(DAYS)]
    runs = ui.wait_backfill(ui.launch_backfill([["marts", name] for name in MARTS], days))
    assert len(runs) == 1
    (run,) = runs
    assert run["status"] == "SUCCESS"
    assert {key for key, _ in _materialized(run)} == {f"marts/{name}" for name in MARTS}
    publish = ui.wait_publish_after(run["runId"])
    assert ui.snapshot_version() == publish
    with connect_snapshot(ui.settings.serving_path) as con:
        built = con.execute("select count(*) from marts.dau").fetchone()
    assert built == (DAYS,)


def test_materialize_one_raw_asset_loads_both_tables(ui: DagsterUI) -> None:
    landing = ui.settings.landing_dir
    line = {
        "type": "track",
        "event": "Clicked",
        "userId": "ui-user",
        "messageId": "ui-test-message",
        "timestamp": f"{LAST.isoformat()}T12:00:00Z",
    }
    (landing / "ui-test.jsonl").write_text(json.dumps(line) + "\nnot json\n")
    run = ui.wait_run(ui.launch_run([["raw", "events"]], {}))
    assert run["status"] == "SUCCESS"
    assert {key for key, _ in _materialized(run)} == {"raw/events", "raw/rejected_events"}
