"""Segments: closed by size and age, invisible to the loader while open, one server per area."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ingestion.api.segments import LandingLocked, SegmentWriter, lock_landing, recover
from ingestion.landing import landing_files


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
