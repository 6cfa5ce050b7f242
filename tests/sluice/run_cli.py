"""Run the ``sluice`` command as a user's shell, a log or CI does: a real process whose stdout
and stderr are pipes, not a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SLUICE = str(Path(sys.executable).with_name("sluice"))


def sluice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SLUICE, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """The command failed with one error line holding every needle, and no traceback (click
    adds its usage lines above the error line of a bad option)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], result.stderr


def assert_only_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """As assert_one_line_error, and the error line is all the command printed on stderr."""
    assert_one_line_error(result, *needles)
    assert len(result.stderr.splitlines()) == 1, result.stderr


def table_rows(output: str) -> dict[str, list[str]]:
    """The body rows of a table that rich printed, by their first cell."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows
