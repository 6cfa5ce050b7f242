"""What retention drops, and the record of what it has dropped. Reads no environment.

Each layer (``raw``, ``core``, ``marts``) keeps the days its setting says
(``SLUICE_RETENTION_<LAYER>_DAYS``; 0 keeps every day). Its horizon is the first day it still
holds: every day before it was dropped, from every table of the layer (``TABLES``). A horizon
only moves forward: raising a setting later keeps more new days, it does not bring old ones
back.

The horizons are recorded twice, by the ``retention`` job (``retention.py``):

- in the warehouse, ``sluice_meta.retention_horizons``, in the same transaction as the
  deletes: dbt's ``replace_window`` reads it (``dbt_project/macros/retention.sql``) and keeps
  the rows of days it can no longer rebuild as they were built;
- in ``Settings.retention_record_path`` (JSON, written after the commit), which the Dagster
  definitions read to start the daily partitions at the first day every layer still holds,
  without opening the warehouse.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass

from common.durable import atomic_write_text
from common.settings import Settings

RAW = "raw"
CORE = "core"
MARTS = "marts"
LAYERS = (RAW, CORE, MARTS)

META_SCHEMA = "sluice_meta"
HORIZONS_TABLE = "retention_horizons"

# The Settings field of each layer's kept days.
_DAYS_FIELD = {
    RAW: "retention_raw_days",
    CORE: "retention_core_days",
    MARTS: "retention_marts_days",
}
LANDING_DAYS_FIELD = "retention_landing_days"


def setting_text(settings: Settings, field: str) -> str:
    """``SLUICE_...=value`` of a Settings field, as an error or a record names it."""
    declared = Settings.__dataclass_fields__[field].metadata["setting"]
    return f"{declared.variable}={getattr(settings, field)}"


def kept_days(settings: Settings, layer: str) -> int:
    """Days the layer keeps; 0 keeps every day."""
    return int(getattr(settings, _DAYS_FIELD[layer]))


def layer_setting(settings: Settings, layer: str) -> str:
    return setting_text(settings, _DAYS_FIELD[layer])


@dataclass(frozen=True)
class Table:
    """A table retention drops days from."""

    layer: str
    schema: str
    name: str
    # SQL: the UTC day a row belongs to (a weekly table: the Monday of the row's week).
    day: str
    # A weekly table drops the weeks that ended before the horizon (all seven days dropped).
    weekly: bool = False
    # SQL: rows kept even past the horizon.
    keep: str | None = None

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.name}"'

    def cutoff(self, horizon: dt.date) -> dt.date:
        """Rows whose day is before this are dropped."""
        return horizon - dt.timedelta(days=6) if self.weekly else horizon


# retention_weekly finds each user's cohort as their first active week in user_active_weeks,
# so that row stays when its week is dropped: one row per user, and the cohorts stay exact.
_FIRST_WEEK = (
    'activity_week = (select min(first.activity_week) from "core"."user_active_weeks" as first '
    'where first.user_key = "core"."user_active_weeks".user_key)'
)

# Every table of raw, core and marts that holds rows by day (a test keeps this list complete).
# Session time zone UTC: raw's timestamps are cast to their UTC day, as stg_events does.
TABLES = (
    Table(RAW, "raw", "events", 'cast("timestamp" as date)'),
    Table(RAW, "raw", "rejected_events", "cast(_rejected_at as date)"),
    Table(CORE, "core", "fct_events", "event_date"),
    Table(CORE, "core", "user_active_weeks", "activity_week", weekly=True, keep=_FIRST_WEEK),
    *(
        Table(MARTS, "marts", name, "event_date")
        for name in ("dau", "event_counts_daily", "funnel_daily", "revenue_daily", "wau_mau")
    ),
    Table(
        MARTS,
        "marts",
        "retention_weekly",
        "cast(cohort_week + 7 * weeks_since_first_seen as date)",
        weekly=True,
    ),
)


@dataclass(frozen=True)
class Horizon:
    """Every day before ``dropped_before`` was dropped from the layer, under ``setting``."""

    layer: str
    dropped_before: dt.date
    setting: str


def read_record(settings: Settings) -> dict[str, Horizon]:
    """The horizons the last retention run recorded beside the warehouse; none before one."""
    path = settings.retention_record_path
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
        return {
            layer: Horizon(layer, dt.date.fromisoformat(entry["dropped_before"]), entry["setting"])
            for layer, entry in entries.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path} is not a retention record ({error}); delete it and run `sluice retention "
            "--apply`, which writes it again from the warehouse"
        ) from None


def write_record(settings: Settings, horizons: dict[str, Horizon]) -> None:
    entries = {
        layer: {**dataclasses.asdict(h), "dropped_before": h.dropped_before.isoformat()}
        for layer, h in sorted(horizons.items())
    }
    atomic_write_text(settings.retention_record_path, json.dumps(entries, indent=2) + "\n")


def first_partition(settings: Settings) -> tuple[dt.date, Horizon | None]:
    """The first daily partition: the configured start date, or later, the first day every
    layer still holds; with the horizon that moved it there, if one did."""
    start, moved_by = settings.start_date, None
    for horizon in read_record(settings).values():
        if horizon.dropped_before > start:
            start, moved_by = horizon.dropped_before, horizon
    return start, moved_by
