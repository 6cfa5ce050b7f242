"""The serving benchmark plugs into the harness and measures, at a tiny size (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import serving
from bench.__main__ import run_all
from common.settings import REPO_DIR


def test_serving_benchmark_runs_in_the_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "REQUESTS", 3)
    monkeypatch.setattr(serving, "PUBLISH_DAYS", (30,))
    monkeypatch.setattr(serving, "PUBLISH_REPEATS", 1)
    run = run_all("XS", tmp_path, only=["serving"], repeats=1, write=False, source=REPO_DIR)
    result = run["benchmarks"]["serving"]
    assert not run["failed"], result
    for name in serving.REPORTS:
        assert result["reports"][name]["uncached"]["misses"] == 3
        assert result["reports"][name]["cached"]["hits"] == 3
    assert result["publish"][0]["snapshot_bytes"] > 0
    section = serving.markdown(result)
    assert section.startswith(serving.START) and section.endswith(serving.END)
    assert "## Serving" in section
