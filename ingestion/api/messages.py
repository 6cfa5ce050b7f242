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

from common import contract
from common.contract import TimestampParser, contract_reason, dumps, text_of

MAX_FUTURE = dt.timedelta(hours=24)
_NO_TIME = dt.timedelta(0)
# Reasons of the API's own rules, which the loader reports as an unknown type.
API_REASONS = frozenset({contract.FUTURE_REASON})

_MESSAGE_TYPES = frozenset(contract.MESSAGE_TYPES)
assert contract.OBJECT_FIELDS == ("properties", "traits", "context"), "stamp() spells them out"
# An object field that is absent or null passes; so does a dict.
_NO_OBJECT = None
_OBJECT_OR_ABSENT = frozenset({dict, type(None)})


def iso(value: dt.datetime) -> str:
    """UTC, millisecond precision, ``Z``: what Segment writes."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc_text(value: dt.datetime) -> str:
    """``iso`` of a UTC datetime, faster (a message's timestamp is formatted once per message):
    ``isoformat()`` without ``timespec`` is the cheap one, cut to milliseconds; a naive
    datetime (UTC by convention) is formatted twice as fast as an aware one."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    if value.microsecond:
        return value.isoformat()[:23] + "Z"
    return value.isoformat()[:19] + ".000Z"


class Stamped(NamedTuple):
    """One message ready to append: its JSON line, and the reason it will be rejected.

    The reason is what the client is answered and the metrics count; the loader's own text
    for it is ``loader_reason(reason)``.
    """

    line: bytes
    reason: str | None
    # The messageId of a message predicted valid: its Nats-Msg-Id in NATS mode (common.stream).
    message_id: str | None = None


def loader_reason(reason: str | None) -> str | None:
    """The reason the loader writes to ``raw.rejected_events`` for a message the API rejects
    with ``reason``: the same text, except for the API's own rules (see the module doc)."""
    if reason in API_REASONS:
        return contract.UNKNOWN_TYPE.format(value=contract.REJECTED_BY_API_PREFIX + reason)
    return reason


def stamp(
    doc: Any,
    received_at: dt.datetime,
    timestamps: TimestampParser,
    *,
    kind: str | None = None,
    batch_sent_at: Any = None,
    batch_context: Any = None,
    received_at_text: str | None = None,
    received_at_naive: dt.datetime | None = None,
) -> Stamped:
    """Set receivedAt, messageId, a skew-corrected timestamp; predict the loader's verdict.

    ``kind`` is the type implied by a single-message endpoint (``/v1/track``); in a batch the
    message names its own. Non-objects are written as they came, for the loader to reject.
    ``received_at_text`` and ``received_at_naive`` (``received_at`` without its tzinfo) spare
    a batch's messages from deriving them each.

    This runs once per message, so it is written for speed (a batch's hundred messages spent
    more time here than anywhere else): the common case is decided inline, with each field
    read once, and anything unusual is left to ``contract_reason``.
    """
    if doc.__class__ is not dict and not isinstance(doc, dict):
        return Stamped(dumps(doc), contract_reason(doc, timestamps))
    get = doc.get
    if "writeKey" in doc:
        del doc["writeKey"]
    if kind is not None:
        doc["type"] = kind
    received_text = received_at_text or iso(received_at)
    doc["receivedAt"] = received_text
    message_id = get("messageId")
    if not (message_id.__class__ is str and message_id) and text_of(message_id) is None:
        message_id = doc["messageId"] = f"api-{uuid.uuid4()}"
    sent_at_text = get("sentAt")
    if sent_at_text is None and batch_sent_at is not None:
        sent_at_text = doc["sentAt"] = batch_sent_at
    if get("context") is None and batch_context.__class__ is dict:
        doc["context"] = batch_context
    # How far the (corrected) timestamp is ahead of receivedAt, where it is known.
    ahead: dt.timedelta | None = None
    original = get("timestamp")
    sent_at = timestamps.parse_repeated(sent_at_text) if isinstance(sent_at_text, str) else None
    sent_at_valid = sent_at is not None or sent_at_text is None
    timestamp_valid = False
    if original is None:
        ahead = _NO_TIME
        doc["timestamp"] = received_text
        timestamp_valid = True
    elif isinstance(original, str):
        timestamp = timestamps.parse(original)
        timestamp_valid = timestamp is not None
        if timestamp is not None and sent_at is not None:
            # Segment's skew correction: the client's clock is off by (sentAt - receivedAt).
            # Computed on naive UTC datetimes, which format faster.
            skew = sent_at - timestamp
            if received_at_naive is None:
                received_at_naive = received_at.replace(tzinfo=None)
            try:
                corrected = received_at_naive - skew
            except OverflowError:
                ahead = timestamp - received_at
            else:
                ahead = -skew
                doc["originalTimestamp"] = original
                doc["timestamp"] = _utc_text(corrected)
        elif timestamp is not None:
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
    if reason is None and ahead is not None and ahead > MAX_FUTURE:
        wrapper = {
            "type": contract.REJECTED_BY_API_PREFIX + contract.FUTURE_REASON,
            "receivedAt": received_text,
            "message": doc,
        }
        return Stamped(dumps(wrapper), contract.FUTURE_REASON)
    if reason is None:
        return Stamped(dumps(doc), None, message_id)
    return Stamped(dumps(doc), reason)
