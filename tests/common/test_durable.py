"""The one atomic write: whole new file or the old one, never a half, never a leftover."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.durable import atomic_write_text, atomic_writer, temporary_beside


def test_an_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "keys.json"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["keys.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_temporary_path_for_a_library_is_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sluice.duckdb"
    with temporary_beside(target) as temporary:
        assert temporary.parent == tmp_path and not temporary.exists()
        temporary.write_bytes(b"x")
    assert not temporary.exists(), "not renamed: removed"
