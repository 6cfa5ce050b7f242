"""The messages as landing files: their fields as columns, DuckDB formats each as a JSON line,
and each day's lines are written as one file, durably (``common.durable``), so a file sensor
never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from common.durable import atomic_writer
from ingestion.generator.params import (
    BAD_TIMESTAMP,
    BAD_TIMESTAMPS,
    CURRENCIES,
    EVENTS,
    FEATURE_USED,
    FEATURES,
    IDENTIFY,
    JPY,
    LIBRARIES,
    MEDIAN_ORDER_AMOUNT,
    MESSAGE_TYPES,
    NO_IDS,
    ORDER_COMPLETED,
    ORDER_ID_SHARE,
    PAGE,
    PAGE_PATHS,
    PAGES,
    PLANS,
    REPORT_VIEWED,
    REPORTS,
    SENT_AT_SHARE,
    SERVER,
    SIGNED_UP,
    SIGNUP_METHODS,
    SITE_URL,
    TOTAL_ONLY_SHARE,
    TRACK,
    TRUNCATED,
    ZONES,
)
from ingestion.generator.simulate import Bools, Delivery, Ints, Stream, Users


def landing_file_name(day: dt.date) -> str:
    """The name of the landing file that holds the events delivered on ``day``."""
    return f"events-{day.isoformat()}.jsonl"


def _dictionary(codes: Ints, values: Sequence[str], missing: Bools | None = None) -> pa.Array:
    """Strings as a dictionary array: ``values[code]``, null where ``missing`` or code < 0."""
    mask = codes < 0 if missing is None else missing | (codes < 0)
    indices = pa.array(np.where(mask, 0, codes).astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(values), type=pa.string()))


def _nullable(values: npt.NDArray[np.generic], present: Bools) -> pa.Array:
    return pa.array(values, mask=~present)


def _anonymous_ids(rng: np.random.Generator, users: int) -> list[str]:
    raw = rng.integers(0, 256, size=(users, 16), dtype=np.uint8)
    return [str(uuid.UUID(bytes=row.tobytes(), version=4)) for row in raw]


def message_columns(
    rng: np.random.Generator, stream: Stream, users: Users, delivery: Delivery
) -> pa.Table:
    """Every message as the columns the JSON is formatted from (see ``_FORMAT_SQL``)."""
    size = stream.size
    user = stream.user
    platform = users.platform[user]
    kind, event = stream.kind, stream.event
    is_order = event == ORDER_COMPLETED
    library = np.where(is_order, SERVER, platform)

    malformed_kind = np.full(size, -1)
    malformed_kind[delivery.malformed] = delivery.malformed_kind
    cut = rng.uniform(0.2, 0.9, size=size)
    bad_timestamp = np.where(
        malformed_kind == BAD_TIMESTAMP, rng.integers(0, len(BAD_TIMESTAMPS), size=size), -1
    )
    no_ids = malformed_kind == NO_IDS

    currency = users.currency[user]
    amount = np.round(rng.lognormal(np.log(MEDIAN_ORDER_AMOUNT), 0.8, size=size), 2)
    amount = np.where(currency == JPY, np.round(amount * 100.0), amount)
    total_only = rng.random(size) < TOTAL_ONLY_SHARE
    has_order_id = is_order & (rng.random(size) < ORDER_ID_SHARE)
    order_number = np.cumsum(has_order_id) - 1
    has_sent_at = rng.random(size) < SENT_AT_SHARE

    user_count = users.size
    user_ids = [f"user_{index:06d}" for index in range(user_count)]
    emails = [f"{user_id}@example.com" for user_id in user_ids]
    zone_offsets = [zone.utc_offset for zone in ZONES]
    no_code = np.full(size, -1)
    return pa.table(
        {
            "type": _dictionary(kind, MESSAGE_TYPES),
            "message_number": pa.array(np.arange(size)),
            "user_id": _dictionary(user, user_ids, stream.anonymous | no_ids),
            "anonymous_id": _dictionary(
                user, _anonymous_ids(rng, user_count), (library == SERVER) | no_ids
            ),
            "event": _dictionary(event, EVENTS),
            "name": _dictionary(stream.page, PAGES),
            "local_ms": pa.array(stream.instant_ms + users.offset_ms[user]),
            "utc_offset": _dictionary(users.zone[user], zone_offsets),
            "bad_timestamp": _dictionary(bad_timestamp, BAD_TIMESTAMPS),
            "sent_ms": _nullable(delivery.sent_ms, has_sent_at),
            "library": _dictionary(library, [name for name, _ in LIBRARIES]),
            "library_version": _dictionary(library, [version for _, version in LIBRARIES]),
            "timezone": _dictionary(users.zone[user], [z.name for z in ZONES], library == SERVER),
            "has_properties": pa.array((kind == TRACK) | (kind == PAGE)),
            "path": _dictionary(np.where(kind == PAGE, stream.page, -1), PAGE_PATHS),
            "feature": _dictionary(np.where(event == FEATURE_USED, stream.detail, -1), FEATURES),
            "report": _dictionary(np.where(event == REPORT_VIEWED, stream.detail, -1), REPORTS),
            "method": _dictionary(np.where(event == SIGNED_UP, stream.detail, -1), SIGNUP_METHODS),
            "plan": _dictionary(users.plan[user], PLANS, (event != SIGNED_UP) & (kind != IDENTIFY)),
            "email": _dictionary(np.where(kind == IDENTIFY, user, -1), emails),
            "order_number": _nullable(order_number, has_order_id),
            "revenue": _nullable(amount, is_order & ~total_only),
            "total": _nullable(amount, is_order & total_only),
            "currency": _dictionary(np.where(is_order, currency, no_code), CURRENCIES),
            "cut": _nullable(cut, malformed_kind == TRUNCATED),
        }
    )


# Formats the columns of ``message_columns`` into one JSON line each, in table order. DuckDB escapes
# every value (``to_json``); ``concat_ws`` skips nulls, so keys without a value are left out.
# ``cut`` truncates a line to a fraction of its length.
_FORMAT_SQL = """
with messages as (
    select
        '{' || concat_ws(',',
            '"type":' || to_json("type"),
            '"messageId":' || to_json($message_prefix || message_number),
            '"userId":' || to_json(user_id),
            '"anonymousId":' || to_json(anonymous_id),
            '"event":' || to_json("event"),
            '"name":' || to_json("name"),
            '"timestamp":' || to_json(coalesce(
                bad_timestamp,
                strftime(make_timestamp(local_ms * 1000), '%Y-%m-%dT%H:%M:%S.%g') || utc_offset
            )),
            '"sentAt":' || to_json(
                strftime(make_timestamp(sent_ms * 1000), '%Y-%m-%dT%H:%M:%S.%gZ')
            ),
            '"context":{' || concat_ws(',',
                '"library":{"name":' || to_json(library)
                    || ',"version":' || to_json(library_version) || '}',
                '"timezone":' || to_json(timezone)
            ) || '}',
            case when has_properties then '"properties":{' || concat_ws(',',
                '"path":' || to_json(path),
                '"url":' || to_json($site_url || path),
                '"feature":' || to_json(feature),
                '"report":' || to_json(report),
                '"method":' || to_json(method),
                '"plan":' || to_json(plan),
                '"order_id":' || to_json($order_prefix || order_number),
                '"revenue":' || to_json(revenue),
                '"total":' || to_json(total),
                '"currency":' || to_json(currency)
            ) || '}' end,
            case when "type" = 'identify' then '"traits":{' || concat_ws(',',
                '"email":' || to_json(email),
                '"plan":' || to_json(plan)
            ) || '}' end
        ) || '}' as message,
        cut
    from day_lines
)

select
    case
        when cut is null then message
        else left(message, cast(floor(length(message) * cut) as bigint))
    end || chr(10) as line
from messages
"""


def write_files(
    table: pa.Table, delivery: Delivery, out_dir: Path, start: dt.date, seed: int
) -> list[Path]:
    """One landing file a delivery day, its lines in delivery order; returns the files."""
    bounds = np.concatenate([[0], np.cumsum(delivery.day_counts)])
    params = {
        "message_prefix": f"gen-{seed}-",
        "order_prefix": f"ord-{seed}-",
        "site_url": SITE_URL,
    }
    files = []
    with duckdb.connect() as con:
        for day in range(delivery.day_counts.size):
            rows = delivery.line_message[bounds[day] : bounds[day + 1]]
            con.register("day_lines", table.take(pa.array(rows)))
            lines = con.sql(_FORMAT_SQL, params=params).to_arrow_table().column("line")
            con.unregister("day_lines")
            path = out_dir / landing_file_name(start + dt.timedelta(days=day))
            with atomic_writer(path, "wb") as handle:
                for chunk in lines.chunks:
                    _write_text(handle, chunk)
            files.append(path)
    return files


def _write_text(handle: IO[bytes], strings: pa.Array) -> None:
    """Write a string array's characters as they sit in its data buffer: no Python per line."""
    if len(strings) == 0:
        return
    if pa.types.is_large_string(strings.type):
        offset_type: type[np.signedinteger[Any]] = np.int64
    elif pa.types.is_string(strings.type):
        offset_type = np.int32
    else:
        raise TypeError(f"expected strings, got {strings.type}")
    _, offsets_buffer, data = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)
    begin, end = offsets[strings.offset], offsets[strings.offset + len(strings)]
    handle.write(memoryview(data)[begin:end])
