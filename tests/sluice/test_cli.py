"""The sluice command line as a user meets it: real processes, one-line errors, no tracebacks."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import duckdb
import pytest

from common.settings import START_DATE_FILE, Settings, load_settings

from .run_cli import assert_one_line_error, assert_only_error_line, sluice, table_rows


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate", "--start", "2026-02-30"], "'2026-02-30' is not a date"),
        (["materialize", "--start", "yesterday", "--end", "2026-01-01"], "is not a date"),
        (["materialize", "--start", "2026-01-05", "--end", "2026-01-01"], "is before"),
    ],
)
def test_bad_dates_give_one_clear_line(make_settings, args: list[str], needle: str) -> None:
    make_settings(dt.date(2026, 1, 1))
    assert_one_line_error(sluice(*args), needle)


def test_materialize_builds_only_partitioned_days_that_are_over(make_settings) -> None:
    today = dt.date.today()
    first = today - dt.timedelta(days=5)
    make_settings(first)
    yesterday = today - dt.timedelta(days=1)
    assert_only_error_line(
        sluice("materialize", "--start", str(first), "--end", str(today)),
        f"--end {today} is after yesterday ({yesterday}): a day is built once it is over",
    )
    before = first - dt.timedelta(days=1)
    assert_only_error_line(
        sluice("materialize", "--start", str(before), "--end", str(first)),
        f"--start {before} is before the first partition {first}",
        "SLUICE_START_DATE",
    )


def test_generate_records_the_start_date_that_later_commands_use(
    make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = make_settings(dt.date(2000, 1, 1))
    monkeypatch.delenv("SLUICE_START_DATE")
    today = dt.date.today()
    first = today - dt.timedelta(days=3)
    generated = sluice("generate", "--start", str(first), "--days", "1", "--users", "20")
    assert generated.returncode == 0, generated.stderr
    assert (settings.data_dir / START_DATE_FILE).read_text().strip() == str(first)
    assert load_settings().start_date == first
    # Events written elsewhere (--out) do not move the partitions.
    elsewhere = str(settings.data_dir.parent / "elsewhere")
    moved = sluice("generate", "--start", "2020-01-01", "--days", "1", "--out", elsewhere)
    assert moved.returncode == 0, moved.stderr
    assert load_settings().start_date == first

    before = first - dt.timedelta(days=1)
    assert_only_error_line(
        sluice("materialize", "--start", str(before), "--end", str(first)),
        f"--start {before} is before the first partition {first}",
    )
    status = sluice("status")
    assert status.returncode == 0, status.stderr
    # Three daily partitions: the recorded first day up to yesterday.
    assert table_rows(status.stdout)["core/fct_events"][:3] == ["0/3", "3", "0"]


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("SLUICE_START_DATE", "soon", "SLUICE_START_DATE='soon' is not a date"),
        (
            "SLUICE_DUCKDB_MEMORY_LIMIT",
            "lots",
            "SLUICE_DUCKDB_MEMORY_LIMIT='lots' is not an amount of memory",
        ),
        ("SLUICE_DATA_DIR", "/tmp/o'brien/data", "holds a quote"),
    ],
)
def test_bad_setting_names_the_setting(make_settings, name: str, value: str, needle: str) -> None:
    make_settings(dt.date(2026, 1, 1))
    result = sluice("status", env={name: value})
    assert_one_line_error(result, needle)


def test_load_without_landing_folder_says_what_to_do(make_settings) -> None:
    settings: Settings = make_settings(dt.date(2026, 1, 1))
    assert_one_line_error(sluice("load"), str(settings.landing_dir), "sluice generate")


def test_a_locked_warehouse_is_reported_in_one_line(make_settings) -> None:
    today = dt.date.today()
    settings: Settings = make_settings(today - dt.timedelta(days=5))
    assert (
        sluice(
            "generate", "--start", str(today - dt.timedelta(days=2)), "--days", "1", "--users", "20"
        ).returncode
        == 0
    )
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True); "
            "time.sleep(120)",
            str(settings.warehouse_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        assert_one_line_error(sluice("load"), "is open in another process")
    finally:
        holder.kill()
        holder.wait()
    assert sluice("load").returncode == 0


def test_generate_load_and_status(make_settings) -> None:
    today = dt.date.today()
    settings: Settings = make_settings(today - dt.timedelta(days=3))
    start = today - dt.timedelta(days=3)
    generated = sluice(
        "generate", "--start", str(start), "--days", "2", "--users", "50", "--seed", "3"
    )
    assert generated.returncode == 0, generated.stderr
    assert "in 2 files" in generated.stdout
    loaded = sluice("load")
    assert loaded.returncode == 0, loaded.stderr
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("select count(*) from raw.events").fetchone()[0] > 0
    status = sluice("status")
    assert status.returncode == 0, status.stderr
    assert "raw/events" in status.stdout and "marts/dau" in status.stdout
    assert "load SUCCESS" in status.stdout


def test_a_build_out_of_memory_names_the_setting_to_raise(make_settings) -> None:
    today = dt.date.today()
    make_settings(today - dt.timedelta(days=3))
    first = str(today - dt.timedelta(days=2))
    generated = sluice("generate", "--start", first, "--days", "2", "--users", "300")
    assert generated.returncode == 0, generated.stderr
    starved = {"SLUICE_DUCKDB_MEMORY_LIMIT": "1MB", "SLUICE_DUCKDB_THREADS": "1"}
    yesterday = str(today - dt.timedelta(days=1))
    result = sluice("materialize", "--start", first, "--end", yesterday, env=starved)
    # Not mistaken for a warehouse held by another process ("failed to pin block").
    assert_one_line_error(result, "ran out of memory", "SLUICE_DUCKDB_MEMORY_LIMIT=1MB")
    assert "another process" not in result.stderr
