"""Hypothesis strategies for Segment messages: valid ones, and every way the contract breaks."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from common.contract import MESSAGE_TYPES

MISSING = object()

TIMESTAMPS = [
    "2026-03-01T10:00:00Z",
    "2026-03-01T10:00:00.123Z",
    "2026-03-01T10:00:00.123456789+05:30",
    "2026-03-01T10:00:00+0530",
    "2026-03-01 10:00:00+05",
    "2026-03-01T10:00:00",
    "2026-03-01",
    "2026-03-01T10:00Z",
    "2026-3-1T10:00:00Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T10:00:00 UTC",
    "2026-03-01t10:00:00Z",
    "20260301T100000Z",
    "2026-02-30T10:00:00Z",
    "2026-03-01Z",
    "2126-03-01T10:00:00Z",
    "yesterday",
    "",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def field(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(MISSING), values)


def timestamps() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(TIMESTAMPS), st.text(max_size=12), scalars)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """Anything a batch item can be: mostly objects near the contract, some far from it."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    doc = {
        "type": draw(field(st.one_of(st.sampled_from(MESSAGE_TYPES), scalars, json_values))),
        "userId": draw(field(st.one_of(st.text(max_size=6), scalars))),
        "anonymousId": draw(field(st.one_of(st.text(max_size=6), scalars))),
        "messageId": draw(
            field(st.one_of(st.text(max_size=4), st.text(min_size=99, max_size=102), scalars))
        ),
        "event": draw(field(st.one_of(st.text(max_size=6), scalars))),
        "timestamp": draw(field(timestamps())),
        "sentAt": draw(field(timestamps())),
        "properties": draw(field(json_values)),
        "traits": draw(field(json_values)),
        "context": draw(field(json_values)),
    }
    return {name: value for name, value in doc.items() if value is not MISSING}


@st.composite
def good_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A message the loader accepts, with a unique messageId."""
    kind = draw(st.sampled_from(MESSAGE_TYPES))
    day = dt.datetime.now(dt.UTC) - dt.timedelta(days=draw(st.integers(0, 30)))
    doc: dict[str, Any] = {
        "type": kind,
        "userId": draw(st.text(min_size=1, max_size=10)),
        "messageId": f"good-{draw(st.uuids())}",
        "timestamp": day.isoformat(),
        "properties": draw(st.dictionaries(st.text(max_size=5), scalars, max_size=3)),
    }
    if kind == "track":
        doc["event"] = draw(st.text(min_size=1, max_size=10))
    return doc


# Text inside a JSON string that JSON allows and Unicode does not: lone UTF-16 surrogates (a
# JavaScript SDK that cuts a string inside an emoji sends them), a reversed pair; text that is
# odd but valid: NUL, a proper pair, a backslash before "ud800"; and bytes that are not UTF-8:
# Latin-1, a stray continuation byte, overlong encodings, an encoded surrogate, a cut
# sequence, a code point past U+10FFFF.
ODD_TEXT = [
    b"\\ud800",
    b"\\udfff",
    b"\\ud83d",
    b"\\ude00\\ud83d",
    b"\\ud83d\\ude00",
    b"\\\\ud800",
    b"\\u0000",
    b"\\ud800\\u0000",
    b"\xe9",
    b"\xff",
    b"\x80",
    b"\xc0\x80",
    b"\xe0\x80\x80",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    "\u00e9\U0001f600".encode(),
]
# Raw control characters inside a string: the whole body is malformed JSON.
MALFORMED_TEXT = [b"\x00", b"\x1f", b"\n"]
# Fields whose text the contract does not check, then those it does.
FREE_TEXT_FIELDS = ("userId", "event", "property name", "property value", "context")
CHECKED_TEXT_FIELDS = ("type", "timestamp")
_MARK = "@ODD@"


@dataclass(frozen=True)
class OddMessage:
    """One message as JSON bytes, with odd text in some of its strings."""

    line: bytes
    message_id: str
    fields: frozenset[str]
    malformed: bool

    def lands(self, single: bool) -> bool:
        """The loader accepts it whatever the text (a single endpoint sets the type)."""
        checked = self.fields - {"type"} if single else self.fields
        return not checked & set(CHECKED_TEXT_FIELDS)


@st.composite
def odd_messages(draw: st.DrawFn, malformed: bool = True) -> OddMessage:
    """A good message with odd text (``ODD_TEXT``) in some strings, one of them up to some
    thousands of times over; with ``malformed``, sometimes a raw control character."""
    names = FREE_TEXT_FIELDS + CHECKED_TEXT_FIELDS
    fields = draw(st.sets(st.sampled_from(names), min_size=1, max_size=3))
    pieces = ODD_TEXT + MALFORMED_TEXT if malformed else ODD_TEXT

    def text(name: str) -> str:
        return _MARK if name in fields else ""

    message_id = f"odd-{draw(st.uuids())}"
    doc = {
        "type": "track" + text("type"),
        "userId": "u" + text("userId"),
        "messageId": message_id,
        "event": "e" + text("event"),
        "timestamp": dt.datetime.now(dt.UTC).isoformat() + text("timestamp"),
        "properties": {"p" + text("property name"): "v" + text("property value")},
        "context": {"page": {"title": text("context")}},
    }
    parts = json.dumps(doc).encode().split(_MARK.encode())
    line = parts[0]
    is_malformed = False
    for number, part in enumerate(parts[1:]):
        piece = draw(st.sampled_from(pieces))
        is_malformed |= piece in MALFORMED_TEXT
        # One string is long (under 32 KB as stamped: a bad byte grows to three), the rest short.
        times = draw(
            st.integers(1, 4) if number else st.one_of(st.integers(1, 4), st.integers(500, 1000))
        )
        line += piece * times + part
    return OddMessage(line, message_id, frozenset(fields), is_malformed)
