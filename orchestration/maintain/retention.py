"""Retention: drop whole days past each layer's horizon, and landing files loaded long ago.

``run_retention(settings, today, apply)`` works out each layer's horizon (``today`` minus the
layer's kept days, never earlier than the recorded one), counts the rows of every day before
it in each table of ``horizons.TABLES``, and with ``apply`` deletes them and records the
horizons in one transaction, then checkpoints so the freed blocks are reused by later writes.
Landing files go only once a load has taken them (the load's dlt state says when) and
``SLUICE_RETENTION_LANDING_DAYS`` have passed since. Without ``apply`` nothing changes: the
result says what would go.

The caller holds the warehouse (the Dagster op runs in the warehouse pool). Tables are kept in
date order by the load and the models, so a dropped day frees whole row groups; DuckDB reuses
them but does not shrink the file: that is compaction's job (``compaction.py``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from common.settings import Settings
from ingestion.landing.helpers import loaded_landing_files
from ingestion.pipeline import pipeline_name
from orchestration.maintain.horizons import (
    HORIZONS_TABLE,
    LANDING_DAYS_FIELD,
    LAYERS,
    META_SCHEMA,
    TABLES,
    Horizon,
    kept_days,
    layer_setting,
    setting_text,
    write_record,
)

# The landing files a result lists by name (the counts cover them all).
LISTED_FILES = 50


class RetentionError(ValueError):
    """The settings ask for a retention Sluice cannot apply; the message names them."""


@dataclass(frozen=True)
class TableDrop:
    table: str  # schema.name
    layer: str
    rows: int
    # The days (weekly tables: the Mondays) that lose rows, in order.
    days: tuple[str, ...]


@dataclass(frozen=True)
class LandingDrop:
    name: str
    bytes: int
    loaded_at: str


@dataclass
class RetentionResult:
    applied: bool
    today: dt.date
    # layer -> the first day it holds after this pass (None: it keeps every day).
    horizons: dict[str, Horizon | None]
    tables: list[TableDrop] = field(default_factory=list)
    landing: list[LandingDrop] = field(default_factory=list)
    landing_setting: str = ""
    warehouse_bytes: int = 0
    # Bytes of blocks DuckDB has free inside the file (what compaction would give back).
    free_bytes: int = 0

    def days(self, layer: str) -> list[str]:
        """The days of a layer that lose rows (from its daily tables)."""
        daily = {t.label for t in TABLES if t.layer == layer and not t.weekly}
        return sorted({d for t in self.tables if t.table in daily for d in t.days})

    def as_json(self) -> dict[str, Any]:
        """The result as plain JSON: the Dagster metadata, and what the CLI reads back."""
        return {
            "applied": self.applied,
            "today": self.today.isoformat(),
            "dropped_before": {
                layer: (h.dropped_before.isoformat() if h else None)
                for layer, h in self.horizons.items()
            },
            "settings": {layer: (h.setting if h else None) for layer, h in self.horizons.items()},
            "days": {layer: self.days(layer) for layer in LAYERS},
            "rows": {t.table: t.rows for t in self.tables},
            "landing_files": len(self.landing),
            "landing_bytes": sum(f.bytes for f in self.landing),
            "landing_listed": [f.name for f in self.landing[:LISTED_FILES]],
            "landing_setting": self.landing_setting,
            "warehouse_bytes": self.warehouse_bytes,
            "free_bytes": self.free_bytes,
        }


def _span(days: list[str]) -> str:
    if not days:
        return "no day"
    plural = "s" if len(days) > 1 else ""
    return f"{len(days)} day{plural}, {days[0]}" + (f" .. {days[-1]}" if len(days) > 1 else "")


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def describe(report: dict[str, Any]) -> list[str]:
    """What a retention pass dropped, or would drop, in lines (from ``as_json``)."""
    verb = "dropped" if report["applied"] else "would drop"
    lines = []
    for layer in LAYERS:
        before = report["dropped_before"].get(layer)
        if before is None:
            lines.append(f"{layer}: keeps every day")
            continue
        days = report["days"].get(layer, [])
        lines.append(
            f"{layer}: {verb} {_span(days)} (the days before {before}, {report['settings'][layer]})"
        )
        for table, rows in report["rows"].items():
            if table.split(".")[0] == layer:
                lines.append(f"  {table:<28} {rows:>12,} rows")
    files, size = report["landing_files"], report["landing_bytes"]
    setting = report["landing_setting"]
    days = int(setting.split("=")[-1])
    lines.append(
        f"landing: {verb} {files:,} file{'' if files == 1 else 's'} ({_mib(size)}) that a load "
        f"took more than {days} day{'' if days == 1 else 's'} ago ({setting})"
        if days
        else "landing: keeps every file"
    )
    lines += [f"  {name}" for name in report["landing_listed"]]
    if files > len(report["landing_listed"]):
        lines.append(f"  ... and {files - len(report['landing_listed']):,} more")
    lines.append(
        f"warehouse: {_mib(report['warehouse_bytes'])}, of which {_mib(report['free_bytes'])} "
        "free blocks that later writes reuse (`sluice compact` gives them back)"
    )
    return lines


def _horizons(
    settings: Settings, today: dt.date, recorded: dict[str, Horizon]
) -> dict[str, Horizon | None]:
    out: dict[str, Horizon | None] = {}
    for layer in LAYERS:
        days = kept_days(settings, layer)
        if days and days <= settings.late_lookback_days:
            raise RetentionError(
                f"{layer_setting(settings, layer)} must be more than "
                f"{setting_text(settings, 'late_lookback_days')}: a load of late events rebuilds "
                "days up to that far back, and a dropped day can no longer be rebuilt"
            )
        new = Horizon(layer, today - dt.timedelta(days=days), layer_setting(settings, layer))
        old = recorded.get(layer)
        if days == 0 or (old is not None and old.dropped_before >= new.dropped_before):
            out[layer] = old  # never earlier than what was dropped already
        else:
            out[layer] = new
    return out


def _recorded(con: duckdb.DuckDBPyConnection) -> dict[str, Horizon]:
    if not _exists(con, META_SCHEMA, HORIZONS_TABLE):
        return {}
    rows = con.execute(
        f"select layer, dropped_before, setting from {META_SCHEMA}.{HORIZONS_TABLE}"
    ).fetchall()
    return {layer: Horizon(layer, day, setting) for layer, day, setting in rows}


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute(
        "select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def _record(con: duckdb.DuckDBPyConnection, horizons: dict[str, Horizon | None]) -> None:
    con.execute(f"create schema if not exists {META_SCHEMA}")
    con.execute(
        f"create table if not exists {META_SCHEMA}.{HORIZONS_TABLE} ("
        "layer varchar primary key, dropped_before date not null, setting varchar not null, "
        "recorded_at timestamp not null)"
    )
    for horizon in horizons.values():
        if horizon is None:
            continue
        con.execute(
            f"insert or replace into {META_SCHEMA}.{HORIZONS_TABLE} "
            "values (?, ?, ?, current_timestamp::timestamp)",
            [horizon.layer, horizon.dropped_before, horizon.setting],
        )


def _warehouse(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(file bytes in use or free, free bytes) of the attached database."""
    row = con.execute(
        "select total_blocks, free_blocks, block_size from pragma_database_size() "
        "where database_name = current_database()"
    ).fetchone()
    if row is None:
        return 0, 0
    total, free, block = (int(v or 0) for v in row)
    return total * block, free * block


def _drop_tables(
    settings: Settings, horizons: dict[str, Horizon | None], apply: bool, result: RetentionResult
) -> None:
    path = settings.warehouse_path
    if not path.exists():
        return
    with duckdb.connect(str(path), read_only=not apply) as con:
        con.execute("set TimeZone = 'UTC'")
        recorded = _recorded(con)
        planned = _horizons(settings, result.today, recorded)
        horizons.update(planned)
        if apply:
            con.execute("begin transaction")
        for table in TABLES:
            horizon = planned.get(table.layer)
            if horizon is None or not _exists(con, table.schema, table.name):
                continue
            where = f"{table.day} < $cutoff" + (f" and not ({table.keep})" if table.keep else "")
            params = {"cutoff": table.cutoff(horizon.dropped_before)}
            # Counted, then deleted: zone maps make both read only the old row groups. (A
            # DELETE ... RETURNING counted in one statement materializes every deleted row:
            # eight times slower.)
            by_day = con.execute(
                f"select cast({table.day} as varchar) as day, count(*) from {table.qualified} "
                f"where {where} group by all order by day",
                params,
            ).fetchall()
            rows = sum(int(n) for _, n in by_day)
            result.tables.append(
                TableDrop(table.label, table.layer, rows, tuple(day for day, _ in by_day))
            )
            if apply and rows:
                con.execute(f"delete from {table.qualified} where {where}", params)
        if apply:
            _record(con, planned)
            con.execute("commit")
            # Deleted row groups become free blocks at the checkpoint; the WAL is folded in.
            con.execute("checkpoint")
        result.warehouse_bytes, result.free_bytes = _warehouse(con)


def _landing(settings: Settings, today: dt.date, apply: bool) -> list[LandingDrop]:
    days = settings.retention_landing_days
    if not days:
        return []
    # A file goes once a load took it and `days` full days have passed since that load's day.
    before = today - dt.timedelta(days=days)
    dropped = []
    loaded = loaded_landing_files(settings.dlt_dir, pipeline_name(settings))
    for name, entry in sorted(loaded.items()):
        loaded_at = dt.datetime.fromisoformat(str(entry.get("loaded_at")))
        path: Path = settings.landing_dir / name
        if loaded_at.astimezone(dt.UTC).date() >= before or not path.is_file():
            continue
        dropped.append(LandingDrop(name, path.stat().st_size, loaded_at.isoformat()))
        if apply:
            # The load's state keeps the name, so a file dropped again is not loaded twice.
            path.unlink()
    return dropped


def run_retention(settings: Settings, today: dt.date, apply: bool) -> RetentionResult:
    """Drop (with ``apply``) or count (without) what is past each layer's horizon on ``today``."""
    horizons: dict[str, Horizon | None] = {}
    result = RetentionResult(apply, today, horizons)
    result.landing_setting = setting_text(settings, LANDING_DAYS_FIELD)
    _drop_tables(settings, horizons, apply, result)
    dropped_in_warehouse = bool(horizons)
    if not dropped_in_warehouse:  # no warehouse yet: nothing to drop, nothing to record
        horizons.update(_horizons(settings, today, {}))
    result.landing = _landing(settings, today, apply)
    if apply and dropped_in_warehouse:
        write_record(settings, {layer: h for layer, h in horizons.items() if h is not None})
    return result
