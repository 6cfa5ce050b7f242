"""The contract's Python check gives back the rule of a reason, for counting by rule."""

from __future__ import annotations

from common.contract import TimestampParser, contract_reason, every_reason, reason_kind

VALID = {"type": "track", "event": "Signed Up", "userId": "u1", "timestamp": "2026-03-01T10:00:00Z"}


def test_reason_kind_drops_the_lines_own_value() -> None:
    parser = TimestampParser()
    unknown = contract_reason({**VALID, "type": "click"}, parser)
    late = contract_reason({**VALID, "sentAt": "soon"}, parser)
    assert unknown == 'unknown type "click"'
    assert reason_kind(unknown) == 'unknown type "..."'
    assert late is not None and reason_kind(late) == 'sentAt "..." is not an ISO-8601 timestamp'
    assert [reason_kind(reason) for reason in every_reason("x\ny")] == every_reason()
    assert reason_kind("something else") == "something else"
    assert contract_reason(VALID, parser) is None
