"""Segments: closed by size and age, invisible to the loader while open, one server per area;
closed by age in a running server, they reach the load while it keeps running."""

from __future__ import annotations

import datetime as dt
import errno
import os
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from ingestion.api.segments import LandingLocked, SegmentWriter, lock_landing, recover
from ingestion.landing.helpers import landing_files
from sluice.runs import run_job
from tests.ingestion.api.conftest import Server, iso, segments


def test_segments_rotate_by_size_and_only_closed_ones_are_landing_files(tmp_path: Path) -> None:
    sources = tmp_path / "landing" / "sources"
    writer = SegmentWriter(sources, max_bytes=100, max_age_seconds=3600)
    writer.write({"web": [b'{"n": 1}\n']})
    assert landing_files(tmp_path / "landing") == []
    writer.write({"web": [b'{"n": 2, "pad": "' + b"x" * 100 + b'"}\n']})
    writer.write({"web": [b'{"n": 3}\n']})
    closed = landing_files(tmp_path / "landing")
    assert len(closed) == 1
    assert closed[0].read_text().count("\n") == 2
    writer.close_all()
    assert [p.read_text().count("\n") for p in landing_files(tmp_path / "landing")] == [2, 1]


def test_segments_rotate_by_age(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "sources", max_bytes=1 << 20, max_age_seconds=0)
    writer.write({"a": [b"{}\n"], "b": [b"{}\n"]})
    assert len(writer.rotate()) == 2
    assert writer.open_segments == 0


def test_recovery_keeps_complete_lines_and_drops_a_torn_one(tmp_path: Path) -> None:
    folder = tmp_path / "sources" / "web"
    folder.mkdir(parents=True)
    (folder / "a.jsonl.tmp").write_bytes(b'{"n": 1}\n{"n": 2}\n{"n": ')
    (folder / "b.jsonl.tmp").write_bytes(b'{"n": ')
    lines = b"".join(b'{"n": %d}\n' % n for n in range(20_000))
    (folder / "c.jsonl.tmp").write_bytes(lines + b'{"torn": "' + b"x" * 200_000)
    a, c = recover(tmp_path / "sources")
    assert a.name == "a.jsonl"
    assert a.read_bytes() == b'{"n": 1}\n{"n": 2}\n'
    assert c.read_bytes() == lines
    assert sorted(p.name for p in folder.iterdir()) == ["a.jsonl", "c.jsonl"]


def test_a_second_server_on_the_same_landing_area_is_refused(tmp_path: Path) -> None:
    lock_landing(tmp_path / "sources")
    with pytest.raises(LandingLocked, match="SLUICE_DATA_DIR"):
        lock_landing(tmp_path / "sources")


def test_a_failed_write_is_cut_back_and_the_next_write_starts_a_new_segment(
    tmp_path: Path,
) -> None:
    landing = tmp_path / "landing"
    writer = SegmentWriter(landing / "sources", max_bytes=1 << 20, max_age_seconds=3600)
    writer.write({"web": [b'{"n": 1}\n']})
    (segment,) = writer._open.values()
    os.close(segment.fd)
    segment.fd = os.open("/dev/full", os.O_WRONLY)  # every write fails: disk full
    with pytest.raises(OSError) as failure:
        writer.write({"web": [b'{"n": 2}\n']})
    assert failure.value.errno == errno.ENOSPC
    (closed,) = landing_files(landing)
    assert closed.read_bytes() == b'{"n": 1}\n'
    writer.write({"web": [b'{"n": 3}\n']})
    writer.close_all()
    assert [p.read_bytes() for p in landing_files(landing)] == [b'{"n": 1}\n', b'{"n": 3}\n']


def test_segments_closed_by_age_are_loaded_while_the_server_keeps_running(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    server: Server = make_server(SLUICE_API_SEGMENT_SECONDS="1")
    key = server.create_key("web")
    now = iso(dt.datetime.now(dt.UTC))

    def send_and_wait_for_close(first: int) -> list[str]:
        """Send five events; wait until their segment is closed by age alone."""
        ids = [f"age-{n}" for n in range(first, first + 5)]
        batch = [
            {"type": "track", "userId": "u1", "event": "Clicked", "messageId": i, "timestamp": now}
            for i in ids
        ]
        closed_before = len(segments(server.settings))
        response = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(key, ""))
        assert response.json()["accepted"] == 5
        deadline = time.monotonic() + 15
        while len(segments(server.settings)) == closed_before:
            assert time.monotonic() < deadline, "no segment was closed by age in 15 s"
            time.sleep(0.05)
        assert segments(server.settings, ".jsonl.tmp") == []
        return ids

    def loaded_ids() -> list[str]:
        outcome = run_job(server.settings, "load")
        assert outcome.success, outcome.message
        with duckdb.connect(str(server.settings.warehouse_path), read_only=True) as con:
            rows = con.execute("select message_id from raw.events order by 1").fetchall()
        return [row[0] for row in rows]

    first = send_and_wait_for_close(0)
    assert loaded_ids() == first
    # The server still runs, writes a new segment, and the next load takes that one only.
    second = send_and_wait_for_close(5)
    assert server.process is not None and server.process.poll() is None
    assert loaded_ids() == first + second
    assert "sluice_api_segments_waiting 0" in httpx.get(f"{server.url}/metrics").text
