"""The real-time benchmark plugs into the harness and measures at a tiny size: lag through a
real ``sluice serve`` and ``sluice stream``, the worker's throughput against its baseline, and
a baseline that counts different lines fails it. Writes nothing outside tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import realtime, report
from bench.__main__ import run_all
from bench.measure import Run
from common.settings import REPO_DIR


def test_realtime_benchmark_measures_lag_and_throughput(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(realtime, "LADDER", (20_000,))
    run = run_all("XS", tmp_path, only=["realtime"], repeats=1, write=False, source=REPO_DIR)

    result = run["benchmarks"]["realtime"]
    assert not run["failed"], result
    baseline, worker = result["rows"]
    assert worker["ratio"] == pytest.approx(
        worker["seconds"]["median"] / baseline["seconds"]["median"]
    )
    assert worker["peak_rss"]["median"] > 10 * 2**20
    # Every rate offered was measured from the client and by the worker, every event shown.
    assert [step["rate"] for step in result["lag"]][:2] == list(realtime.FIXED_RATES)
    for step in result["lag"]:
        assert step["drained"] and step["added"] == step["events"] > 0
        assert step["worker_lag_events"] == step["events"]
        assert 0 <= step["lag_p50"] <= step["lag_p95"] <= step["lag_max"]
        assert step["worker_peak_rss"] > 10 * 2**20
    section = "\n".join(report._benchmark_markdown("realtime", result, run))
    assert "| offered events/s |" in section and "| 10,000 |" in section


def test_a_baseline_counting_other_lines_fails_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def baseline_counting_every_line_twice(
        task: str, params: dict[str, Any], source: Path, env: Any = None
    ) -> Run:
        if task == "baseline-pass":
            params = {**params, "folders": params["folders"] * 2}
        return run_task(task, params, source, env)

    run_task = realtime.run_task
    monkeypatch.setattr(realtime, "run_task", baseline_counting_every_line_twice)

    run = run_all("XS", tmp_path, only=["realtime"], repeats=1, write=False, source=REPO_DIR)

    assert run["failed"]
    assert "output differs from the baseline" in run["benchmarks"]["realtime"]["error"]
