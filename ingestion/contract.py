"""The event contract: what a landing file and each of its lines must be, and the reasons a
line is rejected. The one place that spells them.

A landing file is UTF-8 text, one JSON message a line, in a file whose name ends in
``LANDING_SUFFIX``; a byte that is not UTF-8 is read as U+FFFD (``valid_utf8``), so the rest
of the file loads. A line that breaks the contract goes to ``raw.rejected_events`` with one
of the reasons below, the first that applies in the order of ``REASONS``. The loader's DuckDB
validation (``ingestion.landing.queries``) builds its SQL from these texts, the ingest API's
prediction (``ingestion.api.messages``) formats them in Python, and ``docs/events.md`` lists
them (``tests/ingestion/test_contract.py`` checks that it lists exactly these).

A reason is a template: ``{field}`` is the field the rule is about (from ``TIMESTAMP_FIELDS``
or ``OBJECT_FIELDS``), ``{value}`` the value found in the line. Reads no environment.
"""

from __future__ import annotations

import string

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


def sql_reason(reason: str, field: str | None = None, value: str | None = None) -> str:
    """``reason`` as a DuckDB string expression: ``field`` is put in as text, ``value`` is a
    SQL expression (a column) whose text is put in where the reason says ``{value}``."""
    parts: list[str] = []
    text = ""
    for literal, name, _, _ in _FORMATTER.parse(reason):
        text += literal
        if name is None:
            continue
        if name == "field" and field is not None:
            text += field
        elif name == "value" and value is not None:
            parts += [_sql_string(text), value]
            text = ""
        else:
            raise ValueError(f"reason {reason!r}: nothing given for {{{name}}}")
    if text or not parts:
        parts.append(_sql_string(text))
    return " || ".join(parts)


def _placeholders(reason: str) -> set[str]:
    return {name for _, name, _, _ in _FORMATTER.parse(reason) if name is not None}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def valid_utf8(data: bytes) -> bytes:
    """``data`` when it is UTF-8; otherwise every bad byte becomes U+FFFD, so the rest loads."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace").encode("utf-8")
    return data
