"""Durable writes for every file that readers must trust (landing segments and generated days,
the key file, the serving snapshot and its Parquet copy, reports): a reader sees the old
file or the new one, whole, and after a crash the rename has survived or never happened.

One recipe, used by every writer: write a temporary file beside the target, fsync it, rename
it over the target, fsync the folder (the rename is an entry of the folder).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder so that a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path, target: Path) -> None:
    """Rename ``source`` (already complete: a file fsynced, or a folder) over ``target`` and
    fsync the folder that holds it."""
    os.replace(source, target)
    fsync_path(target.parent)


@contextlib.contextmanager
def temporary_beside(target: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A free path beside ``target`` (same folder, so the rename is atomic) for a writer that
    opens the file itself (DuckDB, Arrow); removed if the block fails before it was renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    os.unlink(name)
    path = Path(name)
    try:
        yield path
    finally:
        if path.exists() and path.is_file():
            path.unlink()


@contextlib.contextmanager
def atomic_writer(
    target: Path, mode: str = "w", permissions: int | None = None, **open_args: object
) -> Iterator[IO]:
    """``with atomic_writer(path) as f: f.write(...)``: the file appears at ``path`` whole,
    durably, when the block ends without error (with ``permissions``, if given, from its
    first moment there); on error nothing changes."""
    with temporary_beside(target) as temporary:
        with open(temporary, mode, **open_args) as handle:  # type: ignore[call-overload]
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if permissions is not None:
            os.chmod(temporary, permissions)
        replace_durably(temporary, target)


def atomic_write_bytes(target: Path, data: bytes, permissions: int | None = None) -> None:
    with atomic_writer(target, "wb", permissions) as handle:
        handle.write(data)


def atomic_write_text(target: Path, text: str, permissions: int | None = None) -> None:
    with atomic_writer(target, "w", permissions, encoding="utf-8") as handle:
        handle.write(text)
