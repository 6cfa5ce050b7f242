"""``sluice status`` after known runs: per asset, the partitions materialized, missing and
failed, and freshness; read as printed to a log (stdout not a terminal, a narrow COLUMNS)."""

from __future__ import annotations

import datetime as dt

from .run_cli import assert_one_line_error, sluice, table_rows

NARROW = {"COLUMNS": "40"}


def status_rows() -> tuple[dict[str, list[str]], str]:
    result = sluice("status", env=NARROW)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    return table_rows(result.stdout), result.stdout


def test_status_counts_partitions_built_missing_and_failed(make_settings) -> None:
    today = dt.date.today()
    days = [today - dt.timedelta(days=n) for n in range(4, 0, -1)]
    make_settings(days[0])
    generated = sluice("generate", "--start", str(days[0]), "--days", "4", "--users", "300")
    assert generated.returncode == 0, generated.stderr

    # Nothing run yet: every partition missing, none failed, freshness not known.
    rows, _ = status_rows()
    assert rows["marts/dau"] == ["0/4", "4", "0", "never", "UNKNOWN"]
    assert rows["raw/events"] == ["no", "-", "-", "never", "UNKNOWN"]
    assert rows["core/fct_events"] == ["0/4", "4", "0", "never", "-"]

    # Two days built, then a run of the third that fails (DuckDB out of memory).
    built = sluice("materialize", "--start", str(days[0]), "--end", str(days[1]))
    assert built.returncode == 0, built.stderr
    starved = {"SLUICE_DUCKDB_MEMORY_LIMIT": "1MB", "SLUICE_DUCKDB_THREADS": "1"}
    failed = sluice("materialize", "--start", str(days[2]), "--end", str(days[2]), env=starved)
    assert_one_line_error(failed, "ran out of memory")

    rows, output = status_rows()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    dbt_assets = {key: row for key, row in rows.items() if "/" in key and row[0] != "yes"}
    assert {"core/fct_events", "marts/dau", "marts/revenue_daily"} <= dbt_assets.keys()
    for key, (materialized, missing, failed_days, last, freshness) in dbt_assets.items():
        # 2 of 4 days built; of the 2 missing, 1 failed (the starved run), 1 never tried.
        assert (materialized, missing, failed_days) == ("2/4", "2", "1"), key
        assert now - dt.datetime.strptime(last, "%Y-%m-%d %H:%M") < dt.timedelta(hours=1)
        # Built within the last day, the marts meet their daily deadline; the rest have none.
        assert freshness == ("PASS" if key.startswith("marts/") else "-"), key
    assert rows["raw/events"][:3] == ["yes", "-", "-"]
    assert rows["raw/events"][4] == "PASS"
    # Every asset of the flow has a row, its key in full.
    assert {"core/user_active_weeks", "staging/stg_rejected_events", "serving/snapshot"} <= (
        rows.keys()
    )
    assert "last run: elt FAILURE (" in output
