"""Dagster's SQLite event log, writing a batch of asset events in one transaction per database.

A run over a range of days records, per asset and per day, one "materialization planned"
event before it starts and one materialization when dbt is done: 660 events for eleven assets
and 30 days. Dagster's SQLite storage opens, commits and closes both of its databases (the
run's and the cross-run index) for every one of them, about 8-13 ms each, a third of a
30-day run at 1M events. Dagster already hands these events over in batches when
``DAGSTER_EVENT_BATCH_SIZE`` is set (``common/settings.py`` sets it for every process); this
storage writes a batch's rows in the run's database in one transaction, and its asset
events' rows in the index in one more. Asset check evaluations keep Dagster's index writes,
one per event (a run has one per check, not one per day). Every other event, and a batch it
cannot take whole, goes through Dagster's own ``store_event``.

The databases, their tables and their place (``$DAGSTER_HOME/history/runs``) are Dagster's
own: switching this class off in ``dagster.yaml`` loses nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import EventLogEntry
from dagster._config import StringSource
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._serdes import ConfigurableClassData

# Where Dagster's default SQLite storage keeps the event log, under $DAGSTER_HOME.
EVENT_LOG_FOLDER = os.path.join("history", "runs")


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose ``store_event_batch`` uses one transaction per database."""

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {"dagster_home": StringSource}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchingSqliteEventLogStorage:
        base_dir = os.path.join(config_value["dagster_home"], EVENT_LOG_FOLDER)
        return cls(base_dir=base_dir, inst_data=inst_data)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        run_ids = {event.run_id for event in events}
        kinds = {event.dagster_event_type for event in events}
        if len(run_ids) != 1 or not kinds <= ASSET_EVENTS | ASSET_CHECK_EVENTS:
            super().store_event_batch(events)
            return
        # The same rows as store_event writes one event at a time: every event in the run's
        # database, and a copy in the index with the asset tables (or asset-check tables).
        inserts = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(run_ids.pop()) as conn:
            for insert in inserts:
                conn.execute(insert)
        assets = [
            (event, insert)
            for event, insert in zip(events, inserts, strict=True)
            if event.dagster_event_type in ASSET_EVENTS
        ]
        if assets:
            with self.index_transaction() as conn:
                event_ids = []
                for _, insert in assets:
                    with db_result(conn, insert) as result:
                        event_ids.append(result.inserted_primary_key[0])
                self._store_asset_event_tags(conn, [event for event, _ in assets], event_ids)
                for (event, _), event_id in zip(assets, event_ids, strict=True):
                    self._store_asset_event(conn, event, event_id)
        for event, insert in zip(events, inserts, strict=True):
            if event.dagster_event_type in ASSET_CHECK_EVENTS:
                with self.index_connection() as conn, db_result(conn, insert) as result:
                    event_id = result.inserted_primary_key[0]
                self.store_asset_check_event(event, event_id)
