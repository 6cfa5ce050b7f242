"""The benchmark harness at a tiny size: it measures, compares, and fails on a wrong output.

Runs the load benchmark end to end (generator, dlt load, DuckDB baseline) and checks that a
baseline given different input is caught as a mismatch, so no figure can improve by being
wrong. Writes nothing outside tmp_path.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from bench import load
from bench.__main__ import run_all
from bench.measure import MismatchError, expect_rows_equal, run_worker
from sluice.settings import REPO_DIR


def test_load_benchmark_measures_and_checks(tmp_path: Path) -> None:
    run = run_all("XS", tmp_path, only=["load"], repeats=1, write=False, source=REPO_DIR)

    result = run["benchmarks"]["load"]
    assert not run["failed"], result
    assert result["rows"][0]["ratio"] == 1.0
    assert result["rows"][1]["ratio"] > 0
    assert all(row["peak_rss"]["median"] > 10 * 2**20 for row in result["rows"])
    assert result["met"] in (True, False)


def test_a_baseline_with_different_output_fails_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def baseline_missing_a_file(
        task: str, params: dict[str, Any], source: Path, env: Any = None
    ) -> Any:
        if task == "baseline_load":
            params = {**params, "files": params["files"][:-1]}
        return run_worker(task, params, source, env)

    monkeypatch.setattr(load, "run_worker", baseline_missing_a_file)

    run = run_all("XS", tmp_path, only=["load"], repeats=1, write=False, source=REPO_DIR)

    assert run["failed"]
    assert "output differs from the baseline" in run["benchmarks"]["load"]["error"]


def test_marts_that_differ_by_more_than_a_cent_do_not_compare_equal() -> None:
    day = dt.date(2025, 1, 1)
    expect_rows_equal("revenue", [(day, 10.004, 3)], [(day, 10.0, 3)])
    with pytest.raises(MismatchError, match="revenue"):
        expect_rows_equal("revenue", [(day, 10.02, 3)], [(day, 10.0, 3)])
    with pytest.raises(MismatchError, match="dau"):
        expect_rows_equal("dau", [(day, 5)], [(day, 6)])
    with pytest.raises(MismatchError):
        expect_rows_equal("dau", [(day, 5)], [])
