"""The Spark benchmark steps aside, with its reason, where the Spark engine cannot run: the
other benchmarks of the run still count, and the page says why the section is empty. (The
measurement itself needs a cluster and minutes: ``python -m bench --only spark`` runs it.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.__main__ import run_all
from common.settings import REPO_DIR


def test_without_java_the_spark_benchmark_is_skipped_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))  # no bin/java in it
    run = run_all("XS", tmp_path, only=["spark"], repeats=1, write=False, source=REPO_DIR)
    assert not run["failed"]
    result = run["benchmarks"]["spark"]
    assert "Java" in result["skipped"]
    assert "Skipped: no Java" in report.markdown("XS", {**run, "machine": _machine()})


def _machine() -> dict[str, object]:
    return {
        "cpu": "cpu",
        "cores": 2,
        "memory_gib": 1,
        "os": "os",
        "python": "3",
        "versions": {},
        "commit": "0",
    }
