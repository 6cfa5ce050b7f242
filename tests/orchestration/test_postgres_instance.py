"""A team instance on PostgreSQL: Debian's PostgreSQL started for the module (as `nobody`
when the tests run as root; skipped without it, except in CI), and Sluice's Dagster instance
pointed at it with SLUICE_DAGSTER_POSTGRES_URL.

A CLI run loads and builds a few generated days through the instance, and a CLI run that
fails is not marked for a retry it cannot get. Then the parts of a team deployment start as
separate processes against the same instance, as docs/operations.md starts them (a code
server, the daemon, the webserver), and the UI's GraphQL API launches a backfill over a
range; two runs that both need the warehouse while its pool's one slot is taken (they stay
queued, then their warehouse steps run one at a time); and a run whose warehouse is held by
another process, which fails and is retried by the daemon to success once the warehouse is
free again; and a run killed while its step holds the warehouse slot, whose slot run
monitoring frees so that its retry succeeds. Runs, event logs, backfills, sensor ticks and
the pool's limit are read back from PostgreSQL's tables, and no SQLite database appears in
the Dagster home.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import psycopg2
import pytest
import yaml

from common.settings import REPO_DIR, WAREHOUSE_POOL, Settings, load_settings
from ingestion.generator import generate
from orchestration.prepare import dagster_instance_config, prepare
from orchestration.transform.automation import range_tags
from sluice.runs import materialize_range, run_job
from tests.orchestration.test_ui_selections import LAUNCH_RUN, WORKSPACE, DagsterUI, _stop

pytestmark = pytest.mark.slow

DAYS = 3
LAST = dt.date.today() - dt.timedelta(days=1)
FIRST = LAST - dt.timedelta(days=DAYS - 1)
MARTS = ["dau", "event_counts_daily", "funnel_daily", "retention_weekly", "revenue_daily"]
MARTS += ["wau_mau"]
PG_BIN_ROOT = Path("/usr/lib/postgresql")
# Budgets for a busy 2-core machine: the code server loads the definitions in seconds, the
# daemon launches queued runs every few seconds, a run of a few days takes seconds.
STARTUP_SECONDS = 120
RUN_SECONDS = 180
# Longer than two looks of the daemon at the run queue.
QUEUE_SECONDS = 12


def _pg_bin() -> Path | None:
    found = sorted(PG_BIN_ROOT.glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Postgres:
    url: str

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg2.connect(self.url) as con, con.cursor() as cursor:
            cursor.execute(sql, args)
            rows = cursor.fetchall()
        con.close()
        return rows


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of its own on 127.0.0.1, stopped at the end. PostgreSQL refuses
    to run as root: as root, its files and process belong to the user `nobody`."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        missing = f"no PostgreSQL under {PG_BIN_ROOT} (apt-get install -y postgresql)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run installs it")
        pytest.skip(missing)
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", _free_port()
    run = {"check": True, "capture_output": True, "cwd": root}
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "sluice", "--auth=trust"]
    start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w"]
    start += ["-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "-t", "60", "start"]
    try:
        subprocess.run([*as_user, *initdb, "--no-sync", "-E", "UTF8"], **run)
        subprocess.run([*as_user, *start], **run)
        server = f"postgresql://sluice@127.0.0.1:{port}"
        con = psycopg2.connect(f"{server}/postgres")
        con.autocommit = True
        with con.cursor() as cursor:
            cursor.execute("create database dagster")
        con.close()
        yield Postgres(f"{server}/dagster")
    finally:
        if data.exists():
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                cwd=root,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def settings(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A data directory on the PostgreSQL instance, with a few generated days in landing."""
    env = {
        "SLUICE_DATA_DIR": str(tmp_path_factory.mktemp("team") / "data"),
        "SLUICE_START_DATE": FIRST.isoformat(),
        # Written as an operator would: no driver named (Sluice names psycopg2).
        "SLUICE_DAGSTER_POSTGRES_URL": postgres.url,
        "SLUICE_DAGSTER_RUN_RETRIES": "2",
    }
    settings = load_settings(env)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**env, **settings.subprocess_env()}.items():
            patch.setenv(key, value)
        prepare(settings)
        generate(settings.landing_dir, FIRST, DAYS, 120, seed=23)
        yield settings


def _sqlite_files(settings: Settings) -> list[Path]:
    return [
        path
        for path in settings.dagster_home.rglob("*")
        if path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3")
    ]


def test_the_instance_config_names_postgres_and_the_run_policies(settings: Settings) -> None:
    written = yaml.safe_load((settings.dagster_home / "dagster.yaml").read_text())
    assert written == dagster_instance_config(settings)
    assert "event_log_storage" not in written
    url = written["storage"]["postgres"]["postgres_url"]
    assert url.startswith("postgresql+psycopg2://sluice@127.0.0.1:")
    assert written["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": True,
    }
    assert (settings.dagster_home / "dagster.yaml").stat().st_mode & 0o077 == 0
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_a_cli_run_records_its_run_and_events_in_postgres(
    settings: Settings, postgres: Postgres
) -> None:
    outcome = materialize_range(settings, FIRST, LAST)
    assert outcome.success, outcome.message
    assert outcome.days_built == tuple(
        (FIRST + dt.timedelta(days=i)).isoformat() for i in range(DAYS)
    )
    assert outcome.load is not None and outcome.load.loaded_rows > 0
    ((status, job),) = postgres.query(
        "select status, pipeline_name from runs where run_id = %s", outcome.run_id
    )
    assert (status, job) == ("SUCCESS", "elt")
    events = dict(
        postgres.query(
            "select dagster_event_type, count(*) from event_logs where run_id = %s "
            "group by dagster_event_type",
            outcome.run_id,
        )
    )
    assert events["PIPELINE_SUCCESS"] == 1
    # One materialization per asset and day, every one of them in PostgreSQL.
    assert events["ASSET_MATERIALIZATION"] >= DAYS * len(MARTS)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("select count(*) from marts.dau").fetchone() == (DAYS,)
    assert _sqlite_files(settings) == []


@contextlib.contextmanager
def warehouse_held_open(settings: Settings) -> Iterator[None]:
    """The warehouse open for writing in another process, as a DuckDB CLI would hold it."""
    hold = "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1])\n"
    hold += "print('held', flush=True)\ntime.sleep(600)\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(settings.warehouse_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_cli_run_says_why_and_waits_for_no_retry(
    settings: Settings, postgres: Postgres
) -> None:
    """The daemon cannot re-execute a run the CLI executed in its own process: the run must
    not say "will retry", or the alert of a failed run would wait for it forever."""
    with warehouse_held_open(settings):
        outcome = run_job(settings, "publish")
    assert not outcome.success
    assert "is open in another process" in outcome.message
    tags = dict(postgres.query("select key, value from run_tags where run_id = %s", outcome.run_id))
    assert tags["dagster/will_retry"] == "false"


@dataclass
class Team:
    """The parts of a team deployment, each a process of its own, and the UI's API."""

    ui: DagsterUI
    settings: Settings
    postgres: Postgres
    # The code server: runs are processes of it.
    code_server_pid: int

    def launch_job(self, job: str, tags: dict[str, str]) -> str:
        """As the UI's "Launch run" of a job does."""
        selector = {
            "repositoryLocationName": self.ui.location,
            "repositoryName": self.ui.repository,
            "jobName": job,
        }
        params = {
            "selector": selector,
            "mode": "default",
            "runConfigData": "{}",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = self.ui.graphql(LAUNCH_RUN, params=params)["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return str(result["run"]["runId"])

    def wait_quiet(self) -> None:
        """Until no run is queued or going (the sensors launch runs of their own)."""
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            going = self.postgres.query(
                "select count(*) from runs where status in "
                "('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED', 'CANCELING')"
            )
            if going == [(0,)]:
                return
            time.sleep(1)
        raise AssertionError(f"runs still going after {RUN_SECONDS} s")


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=REPO_DIR, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture(scope="module")
def team(settings: Settings, postgres: Postgres) -> Iterator[Team]:
    """A code server (`dagster api grpc`), the daemon and the webserver, started apart on
    the same instance, as docs/operations.md starts them."""
    bin_dir = Path(sys.executable).parent
    code_port, ui_port = _free_port(), _free_port()
    workspace = settings.data_dir / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "grpc_server": {
                            "host": "127.0.0.1",
                            "port": code_port,
                            "location_name": "sluice",
                        }
                    }
                ]
            }
        )
    )
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    code_server = [str(bin_dir / "dagster"), "api", "grpc", "-m", "orchestration.definitions"]
    code_server += ["-a", "defs", "-h", "127.0.0.1", "-p", str(code_port)]
    webserver = [str(bin_dir / "dagster-webserver"), "-w", str(workspace)]
    webserver += ["-h", "127.0.0.1", "-p", str(ui_port)]
    processes = [_start(code_server, logs / "code-server.log")]
    try:
        processes.append(
            _start(
                [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], logs / "daemon.log"
            )
        )
        processes.append(_start(webserver, logs / "webserver.log"))
        ui = _wait_until_loaded(f"http://127.0.0.1:{ui_port}", settings, processes, logs)
        yield Team(ui, settings, postgres, processes[0].pid)
    finally:
        for process in reversed(processes):
            _stop(process)


def _wait_until_loaded(
    url: str, settings: Settings, processes: list[subprocess.Popen[bytes]], logs: Path
) -> DagsterUI:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, "\n".join(
                f"{log.name}:\n{log.read_text()}" for log in sorted(logs.glob("*.log"))
            )
        try:
            answer = httpx.post(f"{url}/graphql", json={"query": WORKSPACE}, timeout=10)
            entries = answer.json()["data"]["workspaceOrError"]["locationEntries"]
        except (httpx.HTTPError, KeyError, ValueError, TypeError):
            time.sleep(1)
            continue
        loaded = entries[0]["locationOrLoadError"] if entries else None
        if loaded and loaded["__typename"] == "RepositoryLocation":
            return DagsterUI(url, entries[0]["name"], loaded["repositories"][0]["name"], settings)
        time.sleep(1)
    raise AssertionError(f"the Dagster UI did not load the code server in {STARTUP_SECONDS} s")


def test_a_backfill_over_a_range_is_one_run_recorded_in_postgres(team: Team) -> None:
    days = [FIRST + dt.timedelta(days=i) for i in range(DAYS)]
    backfill_id = team.ui.launch_backfill([["marts", name] for name in MARTS], days)
    (run,) = team.ui.wait_backfill(backfill_id)
    assert run["status"] == "SUCCESS"
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dagster/backfill"] == backfill_id
    assert (
        tags["dagster/asset_partition_range_start"],
        tags["dagster/asset_partition_range_end"],
    ) == (FIRST.isoformat(), LAST.isoformat())
    assert team.postgres.query("select status from bulk_actions where key = %s", backfill_id) == [
        ("COMPLETED_SUCCESS",)
    ]
    ((materialized,),) = team.postgres.query(
        "select count(*) from event_logs where run_id = %s "
        "and dagster_event_type = 'ASSET_MATERIALIZATION'",
        run["runId"],
    )
    assert materialized == DAYS * len(MARTS)


def _step_intervals(postgres: Postgres, run_ids: list[str]) -> list[tuple[float, float, str]]:
    """(start, end, run:step) of every step of the runs, from the event log in PostgreSQL."""
    rows = postgres.query(
        "select run_id, step_key, dagster_event_type, extract(epoch from timestamp) "
        "from event_logs where run_id = any(%s) and dagster_event_type in "
        "('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE')",
        run_ids,
    )
    starts = {(run, step): at for run, step, kind, at in rows if kind == "STEP_START"}
    ends = {(run, step): at for run, step, kind, at in rows if kind != "STEP_START"}
    assert starts.keys() == ends.keys()
    return sorted((float(starts[k]), float(ends[k]), f"{k[0]}:{k[1]}") for k in starts)


def _retry_of(team: Team, run_id: str) -> str:
    """The run the daemon launched to retry the run."""
    deadline = time.monotonic() + RUN_SECONDS
    while not (
        retried := team.postgres.query(
            "select value from run_tags where run_id = %s and key = 'dagster/auto_retry_run_id'",
            run_id,
        )
    ):
        assert time.monotonic() < deadline, f"run {run_id} was not retried"
        time.sleep(0.5)
    return str(retried[0][0])


def test_two_runs_needing_the_warehouse_take_turns(team: Team) -> None:
    """Both runs are launched while the pool's one slot is taken (as by a step of another
    user's run): the daemon keeps them queued; once the slot is free, their warehouse steps
    run one at a time."""
    team.wait_quiet()
    with dg.DagsterInstance.from_config(str(team.settings.dagster_home)) as instance:
        storage = instance.event_log_storage
        holder = ("another-users-run", "its_warehouse_step")
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, *holder).is_claimed
        try:
            build = team.launch_job("build", range_tags(FIRST.isoformat(), LAST.isoformat()))
            publish = team.launch_job("publish", {})
            # The daemon looks at the queue every few seconds; without the pool's limit it
            # would have started both runs by then.
            time.sleep(QUEUE_SECONDS)
            info = storage.get_concurrency_info(WAREHOUSE_POOL)
            assert (info.slot_count, info.active_slot_count) == (1, 1)
        finally:
            storage.free_concurrency_slot_for_step(*holder)
            freed_at = time.time()
    runs = {run_id: team.ui.wait_run(run_id) for run_id in (build, publish)}
    assert {run["status"] for run in runs.values()} == {"SUCCESS"}, runs
    started = team.postgres.query(
        "select run_id, extract(epoch from timestamp) from event_logs "
        "where run_id = any(%s) and dagster_event_type = 'PIPELINE_START'",
        list(runs),
    )
    assert len(started) == 2
    for run_id, at in started:
        assert float(at) >= freed_at, f"run {run_id} started while the pool's slot was taken"
    steps = _step_intervals(team.postgres, list(runs))
    assert len(steps) >= 3
    for (_, end, step), (start, _, next_step) in itertools.pairwise(steps):
        assert end <= start, f"{step} and {next_step} ran at the same time"


def test_a_run_that_fails_while_the_warehouse_is_held_is_retried_to_success(
    team: Team,
) -> None:
    team.wait_quiet()
    # The warehouse open in another process (a DuckDB CLI, a BI tool) fails the run's step.
    with warehouse_held_open(team.settings):
        failed = team.launch_job("publish", {})
        deadline = time.monotonic() + RUN_SECONDS
        while team.postgres.query("select status from runs where run_id = %s", failed) != [
            ("FAILURE",)
        ]:
            assert time.monotonic() < deadline, f"run {failed} did not fail"
            time.sleep(0.2)
    retry = _retry_of(team, failed)
    assert team.postgres.query(
        "select value from run_tags where run_id = %s and key = 'dagster/will_retry'", failed
    ) == [("true",)]
    run = team.ui.wait_run(retry)
    assert run["status"] == "SUCCESS"
    retry_tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert retry_tags["dagster/parent_run_id"] == failed
    assert retry_tags["dagster/retry_number"] == "1"
    ((message,),) = team.postgres.query(
        "select event from event_logs where run_id = %s and dagster_event_type = 'STEP_FAILURE'",
        failed,
    )
    assert "lock" in message.lower()


def _run_worker_pid(team: Team, run_id: str) -> int:
    """The run's process, a child of the code server, from the run's event log."""
    for (event,) in team.postgres.query(
        "select event from event_logs where run_id = %s and dagster_event_type = 'ENGINE_EVENT'",
        run_id,
    ):
        found = re.search(r"Executing steps in process \(pid: (\d+)\)", event)
        if found:
            pid = int(found.group(1))
            stat = Path(f"/proc/{pid}/stat").read_text()
            assert int(stat.rsplit(")", 1)[1].split()[1]) == team.code_server_pid
            return pid
    raise AssertionError(f"run {run_id} logged no process")


def test_a_run_whose_process_died_gives_the_warehouse_back_and_is_retried(team: Team) -> None:
    """A run killed while its step holds the pool's slot: the code server marks it failed,
    run monitoring frees the slot it never gave back, and the daemon's retry gets it."""
    team.wait_quiet()
    crashed = team.launch_job("build", range_tags(FIRST.isoformat(), LAST.isoformat()))
    deadline = time.monotonic() + RUN_SECONDS
    while not team.postgres.query(
        "select 1 from concurrency_slots where run_id = %s and step_key is not null", crashed
    ):
        assert time.monotonic() < deadline, f"run {crashed} never took the pool's slot"
        time.sleep(0.2)
    os.kill(_run_worker_pid(team, crashed), signal.SIGKILL)
    retry = _retry_of(team, crashed)
    run = team.ui.wait_run(retry)
    assert run["status"] == "SUCCESS"
    ((status, ended),) = team.postgres.query(
        "select status, end_time from runs where run_id = %s", crashed
    )
    assert status == "FAILURE"
    assert team.postgres.query(
        "select count(*) from event_logs where run_id = %s and event like %s",
        crashed,
        f"%Run execution process for {crashed}%",
    ) == [(1,)]
    # The slot came back only when run monitoring freed it, after the run had ended.
    free_after = dagster_instance_config(team.settings)["run_monitoring"][
        "free_slots_after_run_end_seconds"
    ]
    ((first_step,),) = team.postgres.query(
        "select min(extract(epoch from timestamp)) from event_logs "
        "where run_id = %s and dagster_event_type = 'STEP_START'",
        retry,
    )
    assert float(first_step) >= ended + free_after - 1


def test_runs_events_ticks_and_pool_slots_live_in_postgres_not_sqlite(team: Team) -> None:
    tables = {name for (name,) in team.postgres.query("select tablename from pg_tables")}
    assert {"runs", "event_logs", "bulk_actions", "job_ticks", "concurrency_limits"} <= tables
    ((runs,),) = team.postgres.query("select count(*) from runs")
    assert runs >= 5
    # The daemon's sensors ticked, and said so in PostgreSQL's schedule storage.
    ((ticks,),) = team.postgres.query("select count(*) from job_ticks")
    assert ticks > 0
    assert team.postgres.query("select count(*) from daemon_heartbeats") != [(0,)]
    assert team.postgres.query(
        'select concurrency_key, "limit" from concurrency_limits where concurrency_key = %s',
        WAREHOUSE_POOL,
    ) == [(WAREHOUSE_POOL, 1)]
    assert _sqlite_files(team.settings) == []
