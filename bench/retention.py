"""Benchmark of retention and compaction: the time per dropped day and the bytes given back by
Sluice's ``retention`` pass and ``compact``, against plain DuckDB on a copy of the same file.

The warehouse holds the year dataset, loaded and built once (untimed). Each repetition copies
it twice and drops the first ``DROPPED_DAYS`` days of raw and core from both copies:

- **Sluice**: ``orchestration.maintain.retention.run_retention`` (counts each table's rows by
  day, deletes them and records the horizons in one transaction, checkpoints), then
  ``orchestration.maintain.compaction.compact`` (a new file: the schema copied with
  ``COPY FROM DATABASE ... (SCHEMA)``, the dated tables in day order, row counts compared,
  fsynced and renamed over the warehouse);
- **baseline**: a plain ``DELETE FROM <table> WHERE <day> < <horizon>`` per table (the same
  predicates) and a ``CHECKPOINT``, then ``COPY FROM DATABASE`` into a new file.

Each step runs in a fresh process. Checks: after both steps, every table has the same rows in
both copies, and the marts are equal. The file sizes are read after each step: DuckDB keeps a
file's size after a delete (it reuses the freed blocks), so the bytes come back only with
compaction.

``python -m bench --only retention`` runs it; ``python -m bench.retention TASK JSON`` is the
measured steps' entry point (reads SLUICE_* through ``common.settings`` for Sluice's).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.measure import expect_equal, expect_rows_equal, ratio, run_process, summarize

# Half the year goes; the rest stays (more than the late-event lookback, as retention needs).
DROPPED_DAYS = 180
KEPT_DAYS = 185


def _sizes(path: Path) -> int:
    wal = path.with_name(path.name + ".wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _counts(database: Path) -> dict[str, Any]:
    import duckdb

    with duckdb.connect(str(database), read_only=True) as con:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where schema_name in ('raw', 'core', 'marts') order by all"
        ).fetchall()
        rows = {
            f"{s}.{t}": con.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0]  # type: ignore[index]
            for s, t in tables
        }
        dau = con.execute("select * from marts.dau order by all").fetchall()
        revenue = con.execute(
            "select event_date, revenue_usd, orders from marts.revenue_daily order by all"
        ).fetchall()
    return {"rows": rows, "dau": [list(map(str, r)) for r in dau], "revenue": revenue}


def sluice_retention(params: dict[str, Any]) -> dict[str, Any]:
    from common.settings import load_settings
    from orchestration.maintain.retention import run_retention

    settings = load_settings()
    started = time.perf_counter()
    result = run_retention(settings, dt.date.fromisoformat(params["today"]), apply=True)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "days": len(result.days("core")),
        "bytes": _sizes(settings.warehouse_path),
        "free_bytes": result.free_bytes,
        **_counts(settings.warehouse_path),
    }


def sluice_compact(params: dict[str, Any]) -> dict[str, Any]:
    from common.settings import load_settings
    from orchestration.maintain.compaction import compact

    settings = load_settings()
    started = time.perf_counter()
    compact(settings)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": _sizes(settings.warehouse_path)}


def baseline_delete(params: dict[str, Any]) -> dict[str, Any]:
    import duckdb

    from orchestration.maintain.horizons import TABLES

    database = Path(params["database"])
    horizon = dt.date.fromisoformat(params["horizon"])
    started = time.perf_counter()
    with duckdb.connect(str(database)) as con:
        con.execute("set TimeZone = 'UTC'")
        for table in TABLES:
            if table.layer == "marts":
                continue
            keep = f" and not ({table.keep})" if table.keep else ""
            con.execute(
                f"delete from {table.qualified} where {table.day} < ?{keep}",
                [table.cutoff(horizon)],
            )
        con.execute("checkpoint")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": _sizes(database), **_counts(database)}


def baseline_copy(params: dict[str, Any]) -> dict[str, Any]:
    import duckdb

    database = Path(params["database"])
    target = database.with_name("copy.duckdb")
    target.unlink(missing_ok=True)
    started = time.perf_counter()
    with duckdb.connect() as con:
        con.execute(f"attach '{database}' as old (read_only)")
        con.execute(f"attach '{target}' as new")
        con.execute("copy from database old to new")
        con.execute("checkpoint new")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": _sizes(target)}


def counts(params: dict[str, Any]) -> dict[str, Any]:
    return _counts(Path(params["database"]))


TASKS = {
    "counts": counts,
    "sluice_retention": sluice_retention,
    "sluice_compact": sluice_compact,
    "baseline_delete": baseline_delete,
    "baseline_copy": baseline_copy,
}


def _task(ctx: Context, task: str, params: dict[str, Any], env: dict[str, str] | None = None):
    args = [sys.executable, "-m", "bench.retention", task, json.dumps(params)]
    return run_process(args, env={**(env or {}), "PYTHONPATH": str(ctx.source)}, cwd=ctx.source)


def _mib(size: float) -> str:
    return f"{size / 2**20:,.1f}"


def run(ctx: Context) -> dict[str, Any]:
    data = ctx.year
    today = data.first_day + dt.timedelta(days=DROPPED_DAYS + KEPT_DAYS)
    horizon = today - dt.timedelta(days=KEPT_DAYS)
    built = ctx.data_dir("retention-built")
    built.land(data.files)
    built.load()
    built.dbt_build(None, None).check_success()
    size_built = _sizes(built.warehouse)

    runs: dict[str, list[Any]] = {"delete": [], "retention": [], "copy": [], "compact": []}
    for repeat in range(ctx.repeats):
        ours = ctx.data_dir(f"retention-sluice-{repeat}")
        ours.warehouse.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built.warehouse, ours.warehouse)
        base = ctx.work / "runs" / f"retention-baseline-{repeat}" / "baseline.duckdb"
        base.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built.warehouse, base)
        env = {
            **ours.env,
            "SLUICE_RETENTION_RAW_DAYS": str(KEPT_DAYS),
            "SLUICE_RETENTION_CORE_DAYS": str(KEPT_DAYS),
            "SLUICE_RETENTION_MARTS_DAYS": "0",
            "SLUICE_RETENTION_LANDING_DAYS": "0",
        }
        # Alternate the order so that neither side always runs on a warm page cache.
        steps = [
            ("retention", "sluice_retention", {"today": today.isoformat()}, env),
            ("delete", "baseline_delete", {"database": str(base), "horizon": str(horizon)}, None),
        ]
        for name, task, params, task_env in steps if repeat % 2 == 0 else steps[::-1]:
            runs[name].append(_task(ctx, task, params, task_env))
        ours_after, base_after = runs["retention"][-1].result, runs["delete"][-1].result
        expect_equal("retention: rows per table", ours_after["rows"], base_after["rows"])
        expect_equal("retention: dau", ours_after["dau"], base_after["dau"])
        expect_rows_equal("retention: revenue", ours_after["revenue"], base_after["revenue"])
        runs["compact"].append(_task(ctx, "sluice_compact", {}, env))
        runs["copy"].append(_task(ctx, "baseline_copy", {"database": str(base)}))
        after = _task(ctx, "counts", {"database": str(ours.warehouse)})
        expect_equal("compaction: rows per table", after.result["rows"], base_after["rows"])
        ctx.done_with(ours)
        shutil.rmtree(base.parent, ignore_errors=True)
    ctx.done_with(built)

    stats = {name: summarize(items) for name, items in runs.items()}
    days = runs["retention"][0].result["days"]
    last = {name: items[-1].result for name, items in runs.items()}
    per_day = {name: stats[name]["seconds"]["median"] / days for name in ("delete", "retention")}
    retention_ratio = ratio(stats["retention"], stats["delete"])
    compact_ratio = ratio(stats["compact"], stats["copy"])
    rows = [
        {"label": "baseline: DELETE per table + CHECKPOINT", **stats["delete"], "ratio": 1.0},
        {"label": "Sluice: retention pass", **stats["retention"], "ratio": retention_ratio},
        {"label": "baseline: COPY FROM DATABASE", **stats["copy"], "ratio": 1.0},
        {"label": "Sluice: compact (day order, checked, swapped)", **stats["compact"],
         "ratio": compact_ratio},
    ]  # fmt: skip
    sizes = [
        ["built warehouse", _mib(size_built), _mib(size_built)],
        ["after dropping the days", *(_mib(last[k]["bytes"]) for k in ("delete", "retention"))],
        ["after compaction", *(_mib(last[k]["bytes"]) for k in ("copy", "compact"))],
    ]
    reclaimed = size_built - last["compact"]["bytes"]
    return {
        "title": "Retention and compaction: half of a year dropped",
        "input": (
            f"the year dataset ({data.events:,} events, 365 days) loaded and built; the first "
            f"{days} days dropped from raw and core (marts kept), then the file compacted"
        ),
        "rows": rows,
        "target": "retention and compaction each <= 1.5x their baseline",
        "measured": (
            f"retention {retention_ratio:.2f}x ({per_day['retention'] * 1000:.1f} ms per dropped "
            f"day), compaction {compact_ratio:.2f}x; {_mib(reclaimed)} MiB of "
            f"{_mib(size_built)} given back"
        ),
        "met": retention_ratio <= 1.5 and compact_ratio <= 1.5,
        "checked": "same rows in every table of raw, core and marts, and equal dau and revenue",
        "tables": [
            {
                "caption": "Warehouse file size (MiB), baseline and Sluice:",
                "header": ["", "baseline", "Sluice"],
                "rows": sizes,
            }
        ],
        "seconds_per_dropped_day": per_day,
        "bytes": {
            "built": size_built,
            "after_delete": {k: last[k]["bytes"] for k in ("delete", "retention")},
            "after_compaction": {k: last[k]["bytes"] for k in ("copy", "compact")},
            "reclaimed": reclaimed,
        },
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m bench.retention {{{','.join(TASKS)}}} JSON", file=sys.stderr)
        return 2
    result = TASKS[argv[0]](json.loads(argv[1]))
    sys.stdout.flush()
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
