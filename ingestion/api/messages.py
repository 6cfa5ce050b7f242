"""Stamp incoming messages as Segment does, and pre-check them against the event contract.

The contract is the loader's DuckDB validation (``ingestion.landing.queries``; the rules and
reasons are ``common.contract``'s): it decides what reaches ``raw.events``. The API writes
every message it accepted from a client to a landing segment, valid or not, and the loader
quarantines the invalid ones with its own reason. This module only predicts that outcome,
cheaply and in the same order of checks, so the response and the metrics can count
rejections; ``tests/ingestion/api/test_contract_agreement.py`` proves the prediction matches
the loader. The check itself (``contract_reason``, with ``TimestampParser``) is the contract's,
shared with the real-time worker; this module adds the stamping and a fast path for the
common case.

One rule is the API's own (``contract.FUTURE_REASON``): a timestamp more than 24 hours in
the future (after skew correction) is rejected. The client is told so in those words; the
loader has no such rule, so such a message is written wrapped in an object whose ``type``
names the reason, the loader rejects it as an unknown type with that text
(``loader_reason``), and the original message is kept whole in ``raw_line``. Reads no
environment.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, NamedTuple

import orjson

from common import contract
from common.contract import TimestampParser, contract_reason, dumps, text_of

MAX_FUTURE = dt.timedelta(hours=24)
_NO_TIME = dt.timedelta(0)
# Reasons of the API's own rules, which the loader reports as an unknown type.
API_REASONS = frozenset({contract.FUTURE_REASON})

_MESSAGE_TYPES = frozenset(contract.MESSAGE_TYPES)
assert contract.OBJECT_FIELDS == ("properties", "traits", "context"), "stamp_batch spells them"
# An object field that is absent or null passes; so does a dict.
_NO_OBJECT = None
_OBJECT_OR_ABSENT = frozenset({dict, type(None)})
_DOT = ord(".")


def iso(value: dt.datetime) -> str:
    """UTC, millisecond precision, ``Z``: what Segment writes."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc_text(value: dt.datetime) -> str:
    """``iso`` of a UTC datetime, faster (a message's timestamp is formatted once per message):
    orjson writes a UTC or naive (UTC by convention) datetime as ISO text twice as fast
    as ``isoformat``; it is cut to milliseconds here."""
    if value.tzinfo is not None and value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    text = orjson.dumps(value)
    # '"YYYY-MM-DDTHH:MM:SS.ffffff..."', or without the fraction when it is zero.
    if text[20] == _DOT:
        return text[1:24].decode() + "Z"
    return text[1:20].decode() + ".000Z"


def loader_reason(reason: str | None) -> str | None:
    """The reason the loader writes to ``raw.rejected_events`` for a message the API rejects
    with ``reason``: the same text, except for the API's own rules (see the module doc)."""
    if reason in API_REASONS:
        return contract.UNKNOWN_TYPE.format(value=contract.REJECTED_BY_API_PREFIX + reason)
    return reason


class StampedBatch(NamedTuple):
    """A request's messages ready to append, in order.

    ``lines`` holds each message's JSON line followed by a newline item (the group commit
    writes them as they are, and the stream takes ``lines[::2]``); ``ids`` the messageId of
    each message predicted valid (its Nats-Msg-Id in NATS mode, ``common.stream``), else
    None; ``rejected`` the index and reason of each message predicted rejected. A reason is
    what the client is answered and the metrics count; the loader's own text for it is
    ``loader_reason(reason)``.
    """

    lines: list[bytes]
    ids: list[str | None]
    rejected: list[tuple[int, str]]


def stamp_batch(
    messages: list[Any],
    received_at: dt.datetime,
    timestamps: TimestampParser,
    *,
    kind: str | None = None,
    batch_sent_at: Any = None,
    batch_context: Any = None,
) -> StampedBatch:
    """Set receivedAt, messageId, a skew-corrected timestamp; predict the loader's verdict.

    ``kind`` is the type implied by a single-message endpoint (``/v1/track``); in a batch each
    message names its own. Non-objects are written as they came, for the loader to reject.
    The messages are changed in place.

    This runs once per message of every request, so it is written for speed (a batch's
    hundred messages spent more time here than anywhere else): one loop without a call per
    message, the common case decided inline with each field read once, and anything unusual
    left to ``contract_reason``.
    """
    received_text = iso(received_at)
    received_naive = received_at.astimezone(dt.UTC).replace(tzinfo=None)
    lines: list[bytes] = []
    ids: list[str | None] = []
    rejected: list[tuple[int, str]] = []
    # The last sentAt text seen, and its value (a batch's messages share theirs).
    last_sent_at_text: str | None = None
    last_sent_at: dt.datetime | None = None
    parse = timestamps.parse
    for index, doc in enumerate(messages):
        if doc.__class__ is not dict and not isinstance(doc, dict):
            lines += (dumps(doc), b"\n")
            ids.append(None)
            rejected.append((index, contract_reason(doc, timestamps) or contract.NOT_AN_OBJECT))
            continue
        get = doc.get
        if "writeKey" in doc:
            del doc["writeKey"]
        if kind is not None:
            doc["type"] = kind
        doc["receivedAt"] = received_text
        message_id = get("messageId")
        if not (message_id.__class__ is str and message_id) and text_of(message_id) is None:
            message_id = doc["messageId"] = f"api-{uuid.uuid4()}"
        sent_at_text = get("sentAt")
        if sent_at_text is None and batch_sent_at is not None:
            sent_at_text = doc["sentAt"] = batch_sent_at
        if get("context") is None and batch_context.__class__ is dict:
            doc["context"] = batch_context
        if sent_at_text.__class__ is str or isinstance(sent_at_text, str):
            if sent_at_text != last_sent_at_text:
                last_sent_at_text = sent_at_text
                last_sent_at = parse(sent_at_text)
            sent_at = last_sent_at
            sent_at_valid = sent_at is not None
        else:
            sent_at = None
            sent_at_valid = sent_at_text is None
        # How far the (corrected) timestamp is ahead of receivedAt, where it is known.
        ahead = _NO_TIME
        timestamp_valid = False
        original = get("timestamp")
        if original is None:
            doc["timestamp"] = received_text
            timestamp_valid = True
        elif original.__class__ is str or isinstance(original, str):
            timestamp = parse(original)
            if timestamp is not None:
                timestamp_valid = True
                if sent_at is not None:
                    # Segment's skew correction: the client's clock is off by
                    # (sentAt - receivedAt). Computed on naive UTC datetimes, which format
                    # faster.
                    skew = sent_at - timestamp
                    try:
                        corrected = received_naive - skew
                    except OverflowError:
                        ahead = timestamp - received_at
                    else:
                        ahead = -skew
                        doc["originalTimestamp"] = original
                        doc["timestamp"] = _utc_text(corrected)
                else:
                    ahead = timestamp - received_at
        # The common case, decided inline: text where the contract wants text,
        # objects where it wants objects, timestamps known to parse.
        message_type = get("type")
        if (
            sent_at_valid
            and timestamp_valid
            and message_type.__class__ is str
            and message_type in _MESSAGE_TYPES
            and message_id.__class__ is str
            and len(message_id) <= contract.MAX_MESSAGE_ID_LENGTH
            and (
                (get("userId").__class__ is str and get("userId"))
                or (get("anonymousId").__class__ is str and get("anonymousId"))
            )
            and (message_type != "track" or (get("event").__class__ is str and get("event")))
            and get("properties", _NO_OBJECT).__class__ in _OBJECT_OR_ABSENT
            and get("traits", _NO_OBJECT).__class__ in _OBJECT_OR_ABSENT
            and get("context", _NO_OBJECT).__class__ in _OBJECT_OR_ABSENT
        ):
            reason = None
        else:
            valid = {"receivedAt"}
            if sent_at_valid:
                valid.add("sentAt")
            if timestamp_valid:
                valid.add("timestamp")
            reason = contract_reason(doc, timestamps, frozenset(valid))
        if reason is None and ahead > MAX_FUTURE:
            wrapper = {
                "type": contract.REJECTED_BY_API_PREFIX + contract.FUTURE_REASON,
                "receivedAt": received_text,
                "message": doc,
            }
            lines += (dumps(wrapper), b"\n")
            ids.append(None)
            rejected.append((index, contract.FUTURE_REASON))
        elif reason is None:
            lines += (dumps(doc), b"\n")
            ids.append(message_id)
        else:
            lines += (dumps(doc), b"\n")
            ids.append(None)
            rejected.append((index, reason))
    return StampedBatch(lines, ids, rejected)
