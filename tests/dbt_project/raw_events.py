"""Handcrafted raw Segment messages, in the loader's tables, for the dbt project tests.

``raw.events`` and ``raw.rejected_events`` are created here with the columns the dlt loader
writes (its own column lists), so the dbt tests do not need to run the loader. The messages
cover five UTC days, 2024-03-01 to 2024-03-05: offsets that cross midnight UTC, a message
delivered twice in one file and one retried on the next day, orders in EUR, JPY (a total
only), GBP (no amount) and an unknown currency, and users who only identify.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ingestion.landing.queries import RAW_EVENTS_COLUMNS, RAW_REJECTED_COLUMNS


def _create_table(name: str, columns: dict[str, str]) -> str:
    listed = ", ".join(f'"{column}" {kind}' for column, kind in columns.items())
    return f"create table {name} ({listed})"


# The loader's own column lists, so these tables are the ones it writes.
RAW_DDL = ";\n".join(
    [
        "create schema raw",
        _create_table("raw.events", RAW_EVENTS_COLUMNS),
        _create_table("raw.rejected_events", RAW_REJECTED_COLUMNS),
    ]
)


@dataclass(frozen=True)
class RawEvent:
    """One row of raw.events; timestamps are ISO strings with an offset."""

    message_id: str
    type: str
    timestamp: str
    source_file: str
    line_number: int
    loaded_at: str
    event: str | None = None
    name: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        """The row's values by column of raw.events."""
        return {
            "message_id": self.message_id,
            "type": self.type,
            "event": self.event,
            "name": self.name,
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "timestamp": self.timestamp,
            "sent_at": self.timestamp,
            "received_at": self.timestamp,
            "properties": None if self.properties is None else json.dumps(self.properties),
            "traits": None if self.traits is None else json.dumps(self.traits),
            "context": json.dumps({"library": {"name": "analytics.js"}}),
            "_source_file": self.source_file,
            "_line_number": self.line_number,
            "_loaded_at": self.loaded_at,
        }


def _file(day: str, messages: Sequence[dict[str, Any]]) -> list[RawEvent]:
    """The messages of the landing file named after `day`, loaded at 01:00 UTC that day."""
    loaded_at = f"{day} 01:00:00+00:00"
    return [
        RawEvent(source_file=f"landing/{day}.jsonl", line_number=line, loaded_at=loaded_at, **m)
        for line, m in enumerate(messages, start=1)
    ]


ORDER = "Order Completed"

# Five UTC days, 2024-03-01 to 2024-03-05. The comments give each message's UTC date.
RAW_EVENTS: list[RawEvent] = [
    *_file(
        "2024-03-02",
        [
            # 03-01: a product view by u1.
            dict(
                message_id="m01",
                type="track",
                event="Product Viewed",
                user_id="u1",
                timestamp="2024-03-01 10:00:00+00:00",
            ),
            # 03-01: 00:30 at +02:00 is 22:30 UTC the day before; anonymous only.
            dict(
                message_id="m03",
                type="page",
                name="Home",
                anonymous_id="a1",
                timestamp="2024-03-02 00:30:00+02:00",
            ),
        ],
    ),
    *_file(
        "2024-03-03",
        [
            # 03-02: 20:30 in New York is 01:30 UTC the next day; 100 EUR.
            dict(
                message_id="m02",
                type="track",
                event=ORDER,
                user_id="u1",
                anonymous_id="a9",
                timestamp="2024-03-01 20:30:00-05:00",
                properties={"revenue": 100, "currency": "EUR"},
            ),
            # 03-02: u2 only identifies, so is not active.
            dict(
                message_id="m04",
                type="identify",
                user_id="u2",
                timestamp="2024-03-02 12:00:00+00:00",
                traits={"plan": "pro"},
            ),
            # 03-02: 09:00 in Tokyo is 00:00 UTC; only a total, as a string, in JPY.
            dict(
                message_id="m05",
                type="track",
                event=ORDER,
                user_id="u3",
                timestamp="2024-03-02 09:00:00+09:00",
                properties={"total": "15000", "currency": "JPY"},
            ),
        ],
    ),
    *_file(
        "2024-03-04",
        [
            # 03-03: 25.50 with no currency (USD), delivered twice in the same file.
            dict(
                message_id="m06",
                type="track",
                event=ORDER,
                user_id="u1",
                timestamp="2024-03-03 08:00:00+00:00",
                properties={"revenue": "25.50"},
            ),
            dict(
                message_id="m06",
                type="track",
                event=ORDER,
                user_id="u1",
                timestamp="2024-03-03 08:00:00+00:00",
                properties={"revenue": "25.50"},
            ),
            # 03-03: a sign-up, retried by the client after midnight (see the 03-05 file).
            dict(
                message_id="m07",
                type="track",
                event="Signed Up",
                user_id="u4",
                timestamp="2024-03-03 23:59:00+00:00",
            ),
        ],
    ),
    *_file(
        "2024-03-05",
        [
            # 03-04: the retry of m07, with a new timestamp on the next day: counts once, on 03-03.
            dict(
                message_id="m07",
                type="track",
                event="Signed Up",
                user_id="u4",
                timestamp="2024-03-04 00:01:00+00:00",
            ),
            # 03-04: an anonymous mobile screen.
            dict(
                message_id="m08",
                type="screen",
                name="Settings",
                anonymous_id="a2",
                timestamp="2024-03-04 15:00:00+00:00",
            ),
            # 03-04: an order without an amount (worth 0) in GBP.
            dict(
                message_id="m09",
                type="track",
                event=ORDER,
                user_id="u5",
                timestamp="2024-03-04 16:00:00+00:00",
                properties={"currency": "GBP"},
            ),
            # 03-04: group messages do not make u5 active (the order above does).
            dict(
                message_id="m10",
                type="group",
                user_id="u5",
                timestamp="2024-03-04 16:05:00+00:00",
                traits={"name": "Acme"},
            ),
            # 03-04: an order in a currency without a rate: counted, but no revenue (warning).
            dict(
                message_id="m11",
                type="track",
                event=ORDER,
                user_id="u6",
                timestamp="2024-03-04 18:00:00+00:00",
                properties={"revenue": 10, "currency": "XYZ"},
            ),
        ],
    ),
    *_file(
        "2024-03-06",
        [
            # 03-05: only identify and alias: a day with events but no active user.
            dict(
                message_id="m12",
                type="identify",
                user_id="u7",
                timestamp="2024-03-05 09:00:00+00:00",
            ),
            dict(
                message_id="m13",
                type="alias",
                user_id="u7",
                anonymous_id="a7",
                timestamp="2024-03-05 09:00:01+00:00",
            ),
        ],
    ),
]


def insert_raw_events(warehouse: Path, events: Sequence[RawEvent]) -> None:
    rows = [event.row() for event in events]
    columns = list(rows[0])
    names = ", ".join(f'"{column}"' for column in columns)
    values = ", ".join(f"cast(? as {RAW_EVENTS_COLUMNS[column]})" for column in columns)
    with duckdb.connect(str(warehouse)) as con:
        con.executemany(
            f"insert into raw.events ({names}) values ({values})",
            [list(row.values()) for row in rows],
        )


def create_raw_warehouse(warehouse: Path) -> None:
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(RAW_DDL)
        con.execute(
            "insert into raw.rejected_events "
            "(_source_file, _line_number, reason, raw_line, _rejected_at) values "
            "('landing/2024-03-02.jsonl', 3, 'not valid JSON', '{\"type\": ', "
            "timestamptz '2024-03-02 01:00:00+00:00')"
        )
    insert_raw_events(warehouse, RAW_EVENTS)
