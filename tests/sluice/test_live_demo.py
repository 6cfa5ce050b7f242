"""``sluice live-demo`` (the second half of ``make demo``): ``sluice serve`` and ``sluice
stream`` on a fresh data directory, events sent through the API, every one of them in the
live figures; a second run counts only its own events and replaces its keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.keys import KeyStore
from common.settings import load_settings
from realtime import read

from .run_cli import sluice

SENT = re.compile(r"^all ([\d,]+) events sent through the API are in the live figures, p95 ")


def _sent(stdout: str) -> int:
    matches = [SENT.match(line) for line in stdout.splitlines()]
    found = [int(m.group(1).replace(",", "")) for m in matches if m]
    assert len(found) == 1, stdout
    return found[0]


def test_events_sent_through_the_api_appear_in_the_live_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    first = sluice("live-demo", "--seconds", "3", "--rate", "40")
    assert first.returncode == 0, first.stderr + first.stdout
    lines = first.stdout.splitlines()
    assert lines[0].startswith("sluice serve on http://127.0.0.1:")
    assert "/dashboard  (read key: sk_" in lines[1]
    progress = [line for line in lines if line.startswith("sent ")]
    assert progress and all("ack-to-visible p95" in line for line in progress)
    sent = _sent(first.stdout)
    # 3 s of 10 batches a second of 4 events: at most 120, fewer on a slow machine.
    assert 20 <= sent <= 124

    settings = load_settings()
    assert read.counters(settings.realtime_store_path)["added"] == sent
    # The worker it started has stopped: another may take the data directory.
    once = sluice("stream", "--once")
    assert once.returncode == 0, once.stderr

    again = sluice("live-demo", "--seconds", "2", "--rate", "40")
    assert again.returncode == 0, again.stderr + again.stdout
    more = _sent(again.stdout)
    assert read.counters(settings.realtime_store_path)["added"] == sent + more
    names = [(key.name, key.kind) for key in KeyStore(settings.api_keys_path).list() if key.active]
    assert sorted(names) == [("live-demo", "write"), ("live-demo-screen", "read")]
