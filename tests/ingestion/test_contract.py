"""The event contract's reasons are the ones the loader gives and the ones docs/events.md lists."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from common.contract import MAX_MESSAGE_ID_LENGTH, every_reason
from common.settings import REPO_DIR
from ingestion.landing.helpers import parse_file

VALID = {"type": "track", "event": "Signed Up", "userId": "u1", "timestamp": "2026-03-01T10:00:00Z"}
# One line for each rule, in the order of the contract's reasons.
BROKEN_LINES = [
    "{broken",
    "[1]",
    json.dumps({**VALID, "type": None}),
    json.dumps({**VALID, "type": "click"}),
    json.dumps({**VALID, "userId": None}),
    json.dumps({**VALID, "messageId": "m" * (MAX_MESSAGE_ID_LENGTH + 1)}),
    json.dumps({**VALID, "event": None}),
    json.dumps({**VALID, "timestamp": None}),
    json.dumps({**VALID, "timestamp": "yesterday"}),
    json.dumps({**VALID, "sentAt": "soon"}),
    json.dumps({**VALID, "receivedAt": "now"}),
    json.dumps({**VALID, "properties": [1]}),
    json.dumps({**VALID, "traits": "pro"}),
    json.dumps({**VALID, "context": 5}),
]
_QUOTED = re.compile(r'"[^"]*"')


def test_loader_gives_every_reason_of_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([json.dumps(VALID), *BROKEN_LINES]) + "\n")
    parsed = parse_file(path, "broken.jsonl", dt.datetime.now(dt.UTC))
    assert parsed.accepted.num_rows == 1
    rejected = sorted(
        zip(
            parsed.rejected.column("_line_number").to_pylist(),
            parsed.rejected.column("reason").to_pylist(),
            strict=True,
        )
    )
    assert [_QUOTED.sub('"..."', reason) for _, reason in rejected] == every_reason()


def test_docs_list_every_reason_and_nothing_else() -> None:
    text = (REPO_DIR / "docs" / "events.md").read_text()
    section = text.split("The reasons, checked in this order", 1)[1].split("\n\n", 2)[1]
    listed = re.findall(r"^- `(.*)`$", section, re.MULTILINE)
    assert len(listed) == len(section.splitlines()), "one reason a line, each in backquotes"
    assert listed == every_reason()
