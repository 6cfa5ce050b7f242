"""Hypothesis strategies for Segment messages: valid ones, and every way the contract breaks."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

from ingestion.landing import MESSAGE_TYPES

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
