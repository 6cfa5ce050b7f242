"""The event contract: what a landing file and each of its lines must be, the reasons a line
is rejected, and the check that gives them in Python. The one place that spells them.

A landing file is UTF-8 text, one JSON message a line, in a file whose name ends in
``LANDING_SUFFIX``; a byte that is not UTF-8 is read as U+FFFD (``valid_utf8``), so the rest
of the file loads. A line that breaks the contract goes to ``raw.rejected_events`` with one
of the reasons below, the first that applies in the order of ``REASONS``. Three readers apply
them: the loader's DuckDB validation (``ingestion.landing.queries``) builds its SQL from these
texts and decides what reaches ``raw.events``; the ingest API's prediction
(``ingestion.api.messages``) and the real-time worker (``realtime.windows``) call
``contract_reason``, which checks a parsed message in the same order, and parse timestamps
with ``TimestampParser`` (DuckDB's own rules where the common shape does not match).
``docs/events.md`` lists the reasons (``tests/ingestion/test_contract.py`` checks that it
lists exactly these, and ``tests/ingestion/api/test_contract_agreement.py`` that Python and
SQL agree).

A reason is a template: ``{field}`` is the field the rule is about (from ``TIMESTAMP_FIELDS``
or ``OBJECT_FIELDS``), ``{value}`` the value found in the line; ``reason_kind`` gives a
reason back without its value, for counting by rule. Reads no environment.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
import threading
from typing import Any

import duckdb
import orjson

# Closed landing files end in this; files still being written end in .tmp.
LANDING_SUFFIX = ".jsonl"
MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
MAX_MESSAGE_ID_LENGTH = 100
# Fields that must hold an ISO-8601 timestamp when present (``timestamp`` must be present).
TIMESTAMP_FIELDS = ("timestamp", "sentAt", "receivedAt")
# Fields that must hold a JSON object when present.
OBJECT_FIELDS = ("properties", "traits", "context")

MALFORMED_JSON = "malformed JSON"
NOT_AN_OBJECT = "not a JSON object"
MISSING_TYPE = "missing field type"
UNKNOWN_TYPE = 'unknown type "{value}"'
MISSING_IDS = "missing userId and anonymousId (at least one is required)"
LONG_MESSAGE_ID = f"messageId longer than {MAX_MESSAGE_ID_LENGTH} characters"
TRACK_WITHOUT_EVENT = "track message without event"
MISSING_TIMESTAMP = "missing field timestamp"
NOT_A_TIMESTAMP = '{field} "{value}" is not an ISO-8601 timestamp'
FIELD_NOT_AN_OBJECT = "{field} is not an object"

# Every reason, in the order the rules are checked.
REASONS = (
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    MISSING_TYPE,
    UNKNOWN_TYPE,
    MISSING_IDS,
    LONG_MESSAGE_ID,
    TRACK_WITHOUT_EVENT,
    MISSING_TIMESTAMP,
    NOT_A_TIMESTAMP,
    FIELD_NOT_AN_OBJECT,
)

# The ingest API's own rule, which the loader does not have: the API writes such a message
# wrapped in an object whose type is the prefix and the reason, so the loader rejects it as an
# unknown type and keeps the message whole in ``raw_line``.
FUTURE_REASON = "timestamp more than 24 hours in the future"
REJECTED_BY_API_PREFIX = "rejected by the ingest API: "

_FORMATTER = string.Formatter()
# The common shape SDKs send; anything else is parsed by DuckDB, as the loader does. ASCII
# digits spelled out and matched whole (``fullmatch``): a third faster than ``\d{4}`` with
# anchors, and the texts that only the latter took (other digits, a trailing newline) are
# refused by ``fromisoformat`` and go to DuckDB alike.
_FAST_TIMESTAMP = re.compile(
    r"[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-][0-9][0-9]:[0-9][0-9])?"
)
_MESSAGE_TYPES = frozenset(MESSAGE_TYPES)


def every_reason(value: str = "...") -> list[str]:
    """Every reason the loader can give, one per field for the per-field rules, in order,
    with ``value`` where the line's own value would stand."""
    reasons = []
    for reason in REASONS:
        fields = _placeholders(reason)
        if "field" in fields:
            by_field = TIMESTAMP_FIELDS if reason == NOT_A_TIMESTAMP else OBJECT_FIELDS
            reasons += [reason.format(field=field, value=value) for field in by_field]
        else:
            reasons.append(reason.format(value=value))
    return reasons


def reason_kind(reason: str) -> str:
    """``reason`` with the line's own value replaced by ``...``: one of ``every_reason()``, so
    counts by rule stay few whatever the lines hold. A text that is no reason comes back as is.
    """
    for pattern, kind in _reason_patterns():
        if pattern.fullmatch(reason):
            return kind
    return reason


def _reason_patterns() -> list[tuple[re.Pattern[str], str]]:
    marker = "\x00value\x00"
    return [
        (re.compile(re.escape(marked).replace(re.escape(marker), ".*"), re.DOTALL), kind)
        for marked, kind in zip(every_reason(marker), every_reason(), strict=True)
    ]


def _placeholders(reason: str) -> set[str]:
    return {name for _, name, _, _ in _FORMATTER.parse(reason) if name is not None}


def valid_utf8(data: bytes) -> bytes:
    """``data`` when it is UTF-8; otherwise every bad byte becomes U+FFFD, so the rest loads."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace").encode("utf-8")
    return data


class TimestampParser:
    """ISO-8601 text to an aware UTC datetime, or None, with the loader's (DuckDB's) rules."""

    def __init__(self) -> None:
        self._local = threading.local()
        # A batch's messages share their sentAt: remember the last answer.
        self._last: tuple[str, dt.datetime | None] = ("", None)

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = duckdb.connect()
            con.execute("set TimeZone = 'UTC'")
            self._local.con = con
        return con

    def parse_repeated(self, text: str) -> dt.datetime | None:
        """``parse`` for a text likely equal to the previous one (a batch's sentAt)."""
        last_text, last_value = self._last
        if text == last_text:
            return last_value
        value = self.parse(text)
        self._last = (text, value)
        return value

    def parse(self, text: str) -> dt.datetime | None:
        if _FAST_TIMESTAMP.fullmatch(text):
            try:
                value = dt.datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                if value.tzinfo is None:
                    return value.replace(tzinfo=dt.UTC)
                return value.astimezone(dt.UTC)
        try:
            row = self._duckdb().execute("select try_cast(? as timestamptz)", [text]).fetchone()
        except duckdb.Error:
            return None
        parsed = row[0] if row else None
        if not isinstance(parsed, dt.datetime):
            return None
        try:
            return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        except OverflowError:
            return parsed.replace(tzinfo=dt.UTC)


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON: orjson's, or the standard library's where orjson refuses."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # Integers beyond 64 bits and lone surrogates: the standard library writes them.
        return json.dumps(value, separators=(",", ":")).encode()


def text_of(value: Any) -> str | None:
    """What the loader's ``doc ->> '$.field'`` gives, with its ``nullif(..., '')``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return dumps(value).decode()


def _timestamp_text(value: Any) -> str | None:
    """``doc ->> '$.timestamp'`` without nullif: an empty string is present, and invalid."""
    if isinstance(value, str):
        return value
    return text_of(value)


def contract_reason(
    doc: Any, timestamps: TimestampParser, valid: frozenset[str] = frozenset()
) -> str | None:
    """The loader's reason for rejecting ``doc``, or None when the loader accepts it.

    Mirrors ``ingestion.landing.queries.VALIDATE_SQL`` check for check, in the same order.
    ``valid`` names timestamp fields already known to parse (the caller parsed them).
    """
    if not isinstance(doc, dict):
        return NOT_AN_OBJECT
    kind = text_of(doc.get("type"))
    if kind is None:
        return MISSING_TYPE
    if kind not in _MESSAGE_TYPES:
        return UNKNOWN_TYPE.format(value=kind)
    if text_of(doc.get("userId")) is None and text_of(doc.get("anonymousId")) is None:
        return MISSING_IDS
    message_id = text_of(doc.get("messageId"))
    if message_id is not None and len(message_id) > MAX_MESSAGE_ID_LENGTH:
        return LONG_MESSAGE_ID
    if kind == "track" and text_of(doc.get("event")) is None:
        return TRACK_WITHOUT_EVENT
    for field in TIMESTAMP_FIELDS:
        if field in valid:
            continue
        text = _timestamp_text(doc.get(field))
        if text is None:
            if field == "timestamp":
                return MISSING_TIMESTAMP
            continue
        if timestamps.parse(text) is None:
            return NOT_A_TIMESTAMP.format(field=field, value=text)
    for field in OBJECT_FIELDS:
        value = doc.get(field)
        if value is not None and not isinstance(value, dict):
            return FIELD_NOT_AN_OBJECT.format(field=field)
    return None
