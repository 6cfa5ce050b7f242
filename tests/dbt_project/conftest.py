"""Fixtures for the dbt project tests: a raw DuckDB warehouse and a way to run real dbt on it.

dbt runs as a subprocess, like Dagster runs it, with ``SLUICE_WAREHOUSE_PATH`` pointing at the
test's warehouse and its target and log folders in the test's temporary folder, so tests never
touch ``data/`` or ``dbt_project/target``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from common.settings import DBT_PROJECT_DIR, dbt_executable

from .raw_events import create_raw_warehouse


@dataclass(frozen=True)
class DbtResult:
    returncode: int
    output: str
    results: list[dict[str, Any]]

    def statuses(self) -> dict[str, str]:
        """Status of every node the invocation ran, by unique_id."""
        return {result["unique_id"]: result["status"] for result in self.results}


DbtRunner = Callable[..., DbtResult]


def make_dbt_runner(warehouse: Path, work_dir: Path) -> DbtRunner:
    """A function that runs one dbt command on `warehouse`, keeping its files in `work_dir`."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> DbtResult:
        """``dbt *args``, with ``env`` added to the environment (a window, for instance)."""
        target_path = work_dir / "target"
        full_env = {
            **os.environ,
            "SLUICE_WAREHOUSE_PATH": str(warehouse),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            **(env or {}),
        }
        completed = subprocess.run(
            [
                dbt_executable(),
                *args,
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(target_path),
                "--log-path",
                str(work_dir / "logs"),
            ],
            env=full_env,
            capture_output=True,
            text=True,
            check=False,
        )
        run_results = target_path / "run_results.json"
        results = json.loads(run_results.read_text())["results"] if run_results.exists() else []
        # A failed invocation must not leave the previous invocation's results behind.
        run_results.unlink(missing_ok=True)
        return DbtResult(completed.returncode, completed.stdout + completed.stderr, results)

    return run


@dataclass(frozen=True)
class Warehouse:
    path: Path
    work_dir: Path
    dbt: DbtRunner

    @property
    def compiled_dir(self) -> Path:
        """Where dbt writes the SQL it compiled for this warehouse's models."""
        return self.work_dir / "target" / "compiled" / "sluice" / "models"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # A connection per call: dbt, run in between, needs the file to itself.
        with duckdb.connect(str(self.path)) as con:
            con.execute("set TimeZone = 'UTC'")
            return con.execute(sql, list(params)).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.query(sql, params)


@dataclass(frozen=True)
class BuiltWarehouse:
    warehouse: Warehouse
    build: DbtResult


@pytest.fixture(scope="module")
def built_warehouse(tmp_path_factory: pytest.TempPathFactory) -> BuiltWarehouse:
    """The raw fixture data after one plain `dbt build` (the whole history), built once.

    Tests must not change it; they take a `warehouse` copy for that.
    """
    work_dir = tmp_path_factory.mktemp("dbt_built")
    path = work_dir / "warehouse" / "sluice.duckdb"
    create_raw_warehouse(path)
    warehouse = Warehouse(path, work_dir, make_dbt_runner(path, work_dir))
    result = warehouse.dbt("build")
    assert result.returncode == 0, result.output
    return BuiltWarehouse(warehouse, result)


@pytest.fixture
def warehouse(built_warehouse: BuiltWarehouse, tmp_path: Path) -> Warehouse:
    """A private copy of the built warehouse, for a test that changes data and reruns dbt."""
    path = tmp_path / "warehouse" / "sluice.duckdb"
    path.parent.mkdir(parents=True)
    # dbt closed the file cleanly (checkpointed), so the file alone is the whole database.
    shutil.copyfile(built_warehouse.warehouse.path, path)
    return Warehouse(path, tmp_path, make_dbt_runner(path, tmp_path))
