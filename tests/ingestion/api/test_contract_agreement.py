"""The API's pre-check and the loader's DuckDB validation reject the same messages, alike.

The loader's SQL is the contract; the API only predicts its verdict for the response and
the metrics. Every generated message is stamped as the API does, written as a segment line
and parsed by the loader's own ``parse_file``; messages with text that is not valid Unicode
go through the API's body parser first, as they do over HTTP.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.api.app import parse_body
from ingestion.api.messages import TimestampParser, _utc_text, iso, loader_reason, stamp_batch
from ingestion.landing.helpers import parse_file
from tests.ingestion.api.strategies import (
    OddMessage,
    good_messages,
    messages,
    odd_messages,
    timestamps,
)

PARSER = TimestampParser()
# Numbers and objects quoted in a reason are spelled by DuckDB and Python in their own ways
# (1e+16 vs 10000000000000000.0); strings are quoted alike (test_http checks exact texts).
_QUOTED = re.compile(r'"(.*)"', re.DOTALL)


def same_reason(reason: str | None) -> str | None:
    return None if reason is None else _QUOTED.sub('"..."', reason)


def loader_verdict(tmp_path: Path, line: bytes) -> str | None:
    path = tmp_path / "segment.jsonl"
    path.write_bytes(line + b"\n")
    parsed = parse_file(path, "sources/web/segment.jsonl", dt.datetime.now(dt.UTC))
    if parsed.accepted.num_rows:
        return None
    (reason,) = parsed.rejected.column("reason").to_pylist()
    return str(reason)


def stamp_one(message: Any, batch_sent_at: Any = None) -> tuple[bytes, str | None]:
    """The API's line for one message of a batch, and the reason it predicts (None: valid)."""
    lines, _, rejected = stamp_batch(
        [message], dt.datetime.now(dt.UTC), PARSER, batch_sent_at=batch_sent_at
    )
    return lines[0], rejected[0][1] if rejected else None


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    message=st.one_of(messages(), good_messages()), batch_sent_at=st.one_of(st.none(), timestamps())
)
def test_api_and_loader_agree_on_every_message(
    tmp_path: Path, message: Any, batch_sent_at: Any
) -> None:
    line, reason = stamp_one(message, batch_sent_at=batch_sent_at)
    expected = loader_reason(reason)
    assert same_reason(expected) == same_reason(loader_verdict(tmp_path, line))


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(message=odd_messages(malformed=False))
def test_api_and_loader_agree_on_messages_with_text_that_is_not_valid_unicode(
    tmp_path: Path, message: OddMessage
) -> None:
    doc = parse_body(message.line)
    line, reason = stamp_one(doc)
    loader = loader_verdict(tmp_path, line)
    assert same_reason(loader_reason(reason)) == same_reason(loader)
    if message.lands(single=False):
        assert loader is None


@given(st.datetimes(timezones=st.just(dt.UTC)))
def test_corrected_timestamps_are_written_as_segment_does(moment: dt.datetime) -> None:
    """The skew-corrected timestamp is formatted by a faster path than ``iso``; same text."""
    assert _utc_text(moment) == iso(moment)
    assert _utc_text(moment.replace(tzinfo=None)) == iso(moment)
