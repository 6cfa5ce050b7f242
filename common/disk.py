"""Sizes on disk of the data directory's files and folders, from ``stat`` only (nothing is
opened: the warehouse has one writer). Reads no environment."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder; 0 when missing."""
    try:
        if not path.is_dir():
            return path.stat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            # A segment compacted, a temp file renamed or a Spark task's file moved meanwhile
            # is skipped.
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total
