"""Retention and compaction on a real data directory: generated days, loaded and built by one
Dagster run, then `sluice retention` (dry run, then --apply), rebuilds through Dagster and plain
dbt, the landing files, and `sluice compact`, each as a user runs them.

The fixtures run in a chain on one data directory built once for the module: each step starts
from what the one before left, as an operator's would.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from common.settings import Settings, load_settings
from orchestration.definitions import build_definitions
from orchestration.maintain.horizons import TABLES
from orchestration.maintain.jobs import RETENTION_JOB, RETENTION_OP
from orchestration.maintain.retention import RetentionError, run_retention
from sluice.runs import run_job
from tests.conftest import built_data_dir
from tests.dbt_project.conftest import make_dbt_runner
from tests.sluice.run_cli import assert_one_line_error, sluice

pytestmark = pytest.mark.slow

DAYS = 12
KEPT = 6
TODAY = dt.date.today()
LAST = TODAY - dt.timedelta(days=1)
FIRST = LAST - dt.timedelta(days=DAYS - 1)
# Every day before it is dropped: the first KEPT days of the 12 go, the last KEPT stay.
HORIZON = TODAY - dt.timedelta(days=KEPT)
DROPPED = [(FIRST + dt.timedelta(days=n)).isoformat() for n in range(DAYS - KEPT)]
ENV = {
    "SLUICE_RETENTION_RAW_DAYS": str(KEPT),
    "SLUICE_RETENTION_CORE_DAYS": str(KEPT),
    "SLUICE_RETENTION_MARTS_DAYS": "0",
    "SLUICE_RETENTION_LANDING_DAYS": "2",
    "SLUICE_LATE_LOOKBACK_DAYS": "2",
}
MARTS = (
    "dau",
    "event_counts_daily",
    "funnel_daily",
    "retention_weekly",
    "revenue_daily",
    "wau_mau",
)


def query(settings: Settings, sql: str, params: list[Any] | None = None) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        return con.execute(sql, params or []).fetchall()


def marts(settings: Settings) -> dict[str, list[tuple]]:
    return {name: query(settings, f"select * from marts.{name} order by all") for name in MARTS}


def rows_by_day(settings: Settings) -> dict[str, dict[str, int]]:
    """raw.events and core.fct_events: rows per UTC day."""
    return {
        "raw.events": dict(
            query(
                settings,
                "select cast(cast(timestamp as date) as varchar), count(*) from raw.events "
                "group by all",
            )
        ),
        "core.fct_events": dict(
            query(
                settings,
                "select cast(event_date as varchar), count(*) from core.fct_events group by all",
            )
        ),
    }


@dataclass
class Data:
    settings: Settings
    marts: dict[str, list[tuple]]
    rows: dict[str, dict[str, int]]
    landing_files: list[str]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    with (
        built_data_dir(tmp_path_factory, "retention", LAST, DAYS, 250, seed=21),
        pytest.MonkeyPatch.context() as patch,
    ):
        for key, value in ENV.items():
            patch.setenv(key, value)
        settings = load_settings()
        files = sorted(p.name for p in settings.landing_dir.glob("*.jsonl"))
        yield Data(settings, marts(settings), rows_by_day(settings), files)


@pytest.fixture(scope="module")
def dry_run(data: Data) -> Any:
    return sluice("retention")


@pytest.fixture(scope="module")
def applied(data: Data, dry_run: Any) -> Any:
    return sluice("retention", "--apply")


def test_the_dry_run_shows_what_would_go_and_changes_nothing(data: Data, dry_run: Any) -> None:
    assert dry_run.returncode == 0, dry_run.stderr
    out = dry_run.stdout
    assert "retention (dry run) succeeded" in out
    span = f"{len(DROPPED)} days, {DROPPED[0]} .. {DROPPED[-1]}"
    assert f"raw: would drop {span} (the days before {HORIZON}, SLUICE_RETENTION_RAW_DAYS=6)" in out
    assert f"core: would drop {span}" in out
    assert "marts: keeps every day" in out
    raw_rows = sum(n for day, n in data.rows["raw.events"].items() if day < HORIZON.isoformat())
    assert f"raw.events {raw_rows:,} rows" in " ".join(out.split())
    assert "nothing was dropped" in out
    assert rows_by_day(data.settings) == data.rows
    assert not data.settings.retention_record_path.exists()


def test_apply_drops_the_old_days_and_the_run_says_what_it_dropped(
    data: Data, applied: Any
) -> None:
    assert applied.returncode == 0, applied.stderr
    assert f"raw: dropped {len(DROPPED)} days, {DROPPED[0]} .. {DROPPED[-1]}" in applied.stdout
    now = rows_by_day(data.settings)
    for table, before in data.rows.items():
        assert min(now[table]) == HORIZON.isoformat(), table
        # The kept days are untouched.
        assert now[table] == {d: n for d, n in before.items() if d >= HORIZON.isoformat()}
    # Marts are kept forever by default (SLUICE_RETENTION_MARTS_DAYS=0).
    assert marts(data.settings) == data.marts
    # Each user's first active week stays in user_active_weeks, whatever its age.
    first_weeks = query(
        data.settings,
        "select count(distinct user_key), count(*) from core.user_active_weeks "
        "where activity_week + 6 < ?",
        [HORIZON],
    )
    assert first_weeks[0][0] == first_weeks[0][1]
    # The landing files were loaded today: not 2 days ago yet.
    assert sorted(p.name for p in data.settings.landing_dir.glob("*.jsonl")) == data.landing_files

    with dg.DagsterInstance.from_config(str(data.settings.dagster_home)) as instance:
        (run,) = instance.get_runs(
            filters=dg.RunsFilter(job_name=RETENTION_JOB, statuses=[dg.DagsterRunStatus.SUCCESS]),
            limit=1,
        )
        outputs = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
        (output,) = [e.dagster_event for e in outputs if e.dagster_event.step_key == RETENTION_OP]
        report = output.step_output_data.metadata["retention"].value
        assert report["applied"] is True
        assert report["days"]["raw"] == report["days"]["core"] == DROPPED
        assert report["rows"]["core.fct_events"] == sum(
            n for d, n in data.rows["core.fct_events"].items() if d in DROPPED
        )
        assert report["dropped_before"] == {
            "raw": HORIZON.isoformat(),
            "core": HORIZON.isoformat(),
            "marts": None,
        }
        observation = instance.fetch_observations(dg.AssetKey(["core", "fct_events"]), limit=1)
        (record,) = observation.records
        meta = record.asset_observation.metadata
        assert meta["retention/dropped_before"].value == HORIZON.isoformat()
        assert meta["retention/first_day_dropped"].value == DROPPED[0]
        assert meta["retention/rows_dropped"].value == report["rows"]["core.fct_events"]


def test_the_partitions_start_at_the_horizon_and_older_days_are_refused(
    data: Data, applied: Any
) -> None:
    record = json.loads(data.settings.retention_record_path.read_text())
    assert record["core"]["dropped_before"] == HORIZON.isoformat()
    graph = build_definitions(data.settings).resolve_asset_graph()
    partitions = graph.get(dg.AssetKey(["marts", "dau"])).partitions_def
    assert partitions is not None
    assert partitions.get_first_partition_key() == HORIZON.isoformat()
    refused = sluice("materialize", "--start", FIRST.isoformat(), "--end", LAST.isoformat())
    assert_one_line_error(
        refused, f"--start {FIRST} is before {HORIZON}", "SLUICE_RETENTION_CORE_DAYS=6"
    )


@pytest.fixture(scope="module")
def rebuilt(data: Data, applied: Any) -> Any:
    """The first day that can still be built, rebuilt by a Dagster run: wau_mau's next 27 days
    and funnel_daily's 7 days before it are in its window."""
    return run_job(data.settings, "build", {"dagster/partition": HORIZON.isoformat()})


def test_a_rebuild_keeps_the_marts_whose_facts_were_dropped(data: Data, rebuilt: Any) -> None:
    assert rebuilt.success, rebuilt.message
    assert marts(data.settings) == data.marts
    assert min(rows_by_day(data.settings)["core.fct_events"]) == HORIZON.isoformat()

    # An analyst's plain `dbt build` (the whole history) keeps them too, and says so.
    work = data.settings.data_dir.parent / "dbt-by-hand"
    dbt = make_dbt_runner(data.settings.warehouse_path, work)
    plain = dbt("build")
    assert plain.returncode == 0, plain.output
    assert "fct_events: the window reaches days before" in plain.output
    assert "SLUICE_RETENTION_RAW_DAYS=6" in plain.output or "CORE_DAYS=6" in plain.output
    assert marts(data.settings) == data.marts
    assert min(rows_by_day(data.settings)["core.fct_events"]) == HORIZON.isoformat()

    refused = dbt("build", "--full-refresh")
    assert refused.returncode != 0
    assert "--full-refresh would rebuild the facts and marts" in refused.output
    assert f"lose every row before {HORIZON}" in refused.output
    assert marts(data.settings) == data.marts


@pytest.fixture(scope="module")
def landing_pass(data: Data, rebuilt: Any) -> Any:
    """Retention three days from now: the files loaded today are then older than 2 days."""
    unloaded = data.settings.landing_dir / "events-not-loaded-yet.jsonl"
    unloaded.write_text("")
    as_of = (TODAY + dt.timedelta(days=3)).isoformat()
    return run_job(
        data.settings, RETENTION_JOB, op_config={RETENTION_OP: {"apply": True, "as_of": as_of}}
    )


def test_landing_files_go_only_once_a_load_took_them(data: Data, landing_pass: Any) -> None:
    assert landing_pass.success, landing_pass.message
    report = landing_pass.outputs[RETENTION_OP]["retention"]
    assert report["landing_files"] == len(data.landing_files)
    assert report["landing_listed"] == data.landing_files
    left = sorted(p.name for p in data.settings.landing_dir.rglob("*.jsonl"))
    assert left == ["events-not-loaded-yet.jsonl"]
    # Its horizon moved with it: three more days gone.
    later = (HORIZON + dt.timedelta(days=3)).isoformat()
    assert min(rows_by_day(data.settings)["core.fct_events"]) == later


def test_every_dated_table_of_the_warehouse_has_a_retention_rule(
    data: Data, landing_pass: Any
) -> None:
    tables = {
        f"{schema}.{name}"
        for schema, name in query(
            data.settings,
            "select schema_name, table_name from duckdb_tables() "
            "where schema_name in ('raw', 'core', 'marts') and not starts_with(table_name, '_dlt')",
        )
    }
    assert tables == {table.label for table in TABLES}


def test_compaction_shrinks_the_file_and_keeps_every_row(
    data: Data, landing_pass: Any, tmp_path: Path
) -> None:
    path = data.settings.warehouse_path
    before_rows = {
        f"{s}.{t}": query(data.settings, f'select count(*) from "{s}"."{t}"')[0][0]
        for s, t in query(data.settings, "select schema_name, table_name from duckdb_tables()")
    }
    before_marts = marts(data.settings)
    size_before = path.stat().st_size
    result = sluice("compact")
    assert result.returncode == 0, result.stderr
    assert "compact succeeded" in result.stdout
    assert f"warehouse: {size_before / 2**20:,.1f} MiB before" in result.stdout
    size_after = path.stat().st_size
    assert size_after < size_before
    assert f"{size_after / 2**20:,.1f} MiB after" in result.stdout
    assert not list(path.parent.glob(".sluice.duckdb.*"))  # no partial file left behind
    after_rows = {
        f"{s}.{t}": query(data.settings, f'select count(*) from "{s}"."{t}"')[0][0]
        for s, t in query(data.settings, "select schema_name, table_name from duckdb_tables()")
    }
    assert after_rows == before_rows
    assert marts(data.settings) == before_marts
    # The new file is the warehouse every run uses: the next build works on it.
    outcome = run_job(data.settings, "build", {"dagster/partition": LAST.isoformat()})
    assert outcome.success, outcome.message
    assert marts(data.settings) == before_marts


def test_a_layer_keeping_no_more_days_than_the_late_lookback_is_refused(make_settings) -> None:
    settings = make_settings(FIRST, SLUICE_RETENTION_MARTS_DAYS="3", SLUICE_LATE_LOOKBACK_DAYS="7")
    with pytest.raises(
        RetentionError,
        match="SLUICE_RETENTION_MARTS_DAYS=3 must be more than SLUICE_LATE_LOOKBACK_DAYS=7",
    ):
        run_retention(settings, TODAY, apply=False)
