"""The benchmark harness at a tiny size: it measures, compares, and fails on a wrong output.

Runs the load benchmark end to end (generator, dlt load, DuckDB baseline) and checks that a
baseline given different input is caught as a mismatch, so no figure can improve by being
wrong; and that a partial run (``--only``) rewrites only the sections it measured. Writes
nothing outside tmp_path.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from bench import ingest_api, load, report
from bench.__main__ import run_all, write_results
from bench.measure import MismatchError, expect_rows_equal, run_worker
from common.settings import REPO_DIR


def test_load_benchmark_measures_and_checks(tmp_path: Path) -> None:
    run = run_all("XS", tmp_path, only=["load"], repeats=1, write=False, source=REPO_DIR)

    result = run["benchmarks"]["load"]
    assert not run["failed"], result
    baseline, floor, sluice = result["rows"]
    # The reported ratio is Sluice's median time over the baseline's, all really measured.
    assert min(row["seconds"]["median"] for row in result["rows"]) > 0
    assert sluice["ratio"] == pytest.approx(
        sluice["seconds"]["median"] / baseline["seconds"]["median"]
    )
    assert floor["ratio"] == pytest.approx(
        floor["seconds"]["median"] / baseline["seconds"]["median"]
    )
    assert all(row["peak_rss"]["median"] > 10 * 2**20 for row in result["rows"])
    # The verdict and the figure shown follow from that ratio and the target.
    assert result["met"] is (sluice["ratio"] <= load.TARGET)
    assert result["measured"] == (
        f"{sluice['ratio']:.2f}x; the checks alone, without dlt: {floor['ratio']:.2f}x"
    )
    assert result["target"] == f"Sluice <= {load.TARGET}x baseline"


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


def _ingest_result(measured: str, events_per_s: int) -> dict[str, Any]:
    """An ingest API result in the shape bench/ingest_api.py writes."""
    return {
        "measured": measured,
        "machine": "x86_64, 2 cores",
        "load_average_before": 0.5,
        "phase_seconds": 3.0,
        "repeats": 3,
        "batched": {
            "events_per_s": events_per_s,
            "baseline_events_per_s": 150_000,
            "ratio_vs_baseline": round(events_per_s / 150_000, 2),
            "half_load_p50_ms": 2.0,
            "half_load_p99_ms": 8.0,
        },
        "single": {
            "requests_per_s": 5_000,
            "baseline_requests_per_s": 5_000,
            "ratio_vs_baseline": 1.0,
            "half_load_rate": 2_500,
            "half_load_p50_ms": 2.0,
            "half_load_p99_ms": 12.0,
        },
        "fsync_ms": {"p50_at_most": 0.5, "p99_at_most": 25.0},
        "targets": {"batched_events_per_s": 50_000, "single_requests_per_s": 2_000, "p99_ms": 50.0},
    }


def test_a_partial_run_rewrites_only_the_sections_it_measured(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n{report.NEW_SIZES_GO_HERE}\n")
    # `python -m bench.ingest_api` wrote its section later than the results file's figures.
    ingest_api.write_section(_ingest_result("2026-01-02 10:00 UTC", 73_000), doc)
    stale = _ingest_result("2026-01-01 10:00 UTC", 60_000)
    run = {
        "size": "XS",
        "finished": "2026-01-03 10:00 UTC",
        "seconds": 60.0,
        "repeats": 1,
        "code": "commit abc1234",
        "machine": report.machine(),
        "benchmarks": {"load": {"error": "not run here"}, "ingest_api": stale},
        "failed": False,
    }

    write_results("XS", run, {"load"}, tmp_path, doc)
    text = doc.read_text()
    assert "Measured 2026-01-02 10:00 UTC" in text and "73,000" in text
    assert "60,000" not in text
    assert "<!-- bench:XS:start -->" in text

    write_results("XS", run, {"load", "ingest_api"}, tmp_path, doc)
    text = doc.read_text()
    assert "Measured 2026-01-01 10:00 UTC" in text and "60,000" in text
    assert "73,000" not in text
