"""Durable writes shared by every writer of files readers must trust (landing segments, the
serving snapshot): flush a file's or a folder's entries to disk before anyone is told."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder so that a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
