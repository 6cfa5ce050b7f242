"""The commands of dbt_project/README.md work as written for an analyst: its ``sh`` blocks run
in order in one shell, from the repository root, on a shell whose PATH does not hold the
project's virtual environment (an analyst's new terminal), against a small raw warehouse.

The warehouse and dbt's target and log folders are the test's (SLUICE_WAREHOUSE_PATH,
DBT_TARGET_PATH, DBT_LOG_PATH), so the run never touches ``data/`` or ``dbt_project/target``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb

from common.settings import DBT_PROJECT_DIR, REPO_DIR

from .raw_events import create_raw_warehouse

README = DBT_PROJECT_DIR / "README.md"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def readme_commands() -> list[str]:
    return SH_BLOCK.findall(README.read_text())


def analyst_environment(tmp_path: Path, warehouse: Path) -> dict[str, str]:
    """This process's environment without the virtual environment on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    path = [entry for entry in os.environ["PATH"].split(os.pathsep) if entry != venv_bin]
    env = {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}
    return {
        **env,
        "PATH": os.pathsep.join(path) or "/usr/bin:/bin",
        "SLUICE_WAREHOUSE_PATH": str(warehouse),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def test_the_readme_has_the_commands_an_analyst_runs() -> None:
    script = "\n".join(readme_commands())
    assert "dbt build --profiles-dir ." in script
    assert "--vars" in script and "SLUICE_WINDOW_START" in script
    assert "sqlfluff lint" in script


def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse" / "sluice.duckdb"
    create_raw_warehouse(warehouse)
    script = "set -euo pipefail\n" + "\n".join(readme_commands())
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO_DIR,
        env=analyst_environment(tmp_path, warehouse),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # Three builds (the whole history, a window by vars, a window by environment) and the lint.
    builds = re.findall(r"Done\. PASS=\d+ WARN=\d+ ERROR=(\d+)", result.stdout)
    assert builds == ["0", "0", "0"], result.stdout[-4000:]
    assert "All Finished" in result.stdout
    with duckdb.connect(str(warehouse), read_only=True) as con:
        days = con.execute("select count(*) from marts.dau").fetchone()
    # The raw fixture's five days, 2024-03-01 to 2024-03-05.
    assert days == (5,)
