"""The ingest API benchmark, written beside this harness in ``bench/ingest_api.py`` (its
``run(workdir) -> dict``). The harness calls it when the module exists and notes its absence
otherwise; its figures and its section of docs/benchmarks.md belong to that module, whose
``write_section`` the harness calls to refresh that section."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from bench.context import Context

MODULE = "bench.ingest_api"


def run(ctx: Context) -> dict[str, Any]:
    if importlib.util.find_spec(MODULE) is None:
        return {"skipped": f"{MODULE} does not exist yet"}
    module = importlib.import_module(MODULE)
    workdir = ctx.work / "runs" / "ingest_api"
    workdir.mkdir(parents=True, exist_ok=True)
    return dict(module.run(workdir))


def write_section(result: dict[str, Any]) -> None:
    """Let the ingest API module refresh its own section of docs/benchmarks.md."""
    if "skipped" in result or "error" in result:
        return
    module = importlib.import_module(MODULE)
    if hasattr(module, "write_section"):
        module.write_section(result)
