"""The ingest API benchmark, written beside this harness in ``bench/ingest_api.py`` (its
``run(workdir) -> dict``). The harness calls it when the module exists and notes its absence
otherwise; its figures and its section of docs/benchmarks.md belong to that module, whose
``write_section`` the harness calls to refresh that section. The serving benchmark
(``bench/serving.py``) is called the same way."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.report import DOC

MODULE = "bench.ingest_api"
SERVING = "bench.serving"


def run(ctx: Context, module_name: str = MODULE) -> dict[str, Any]:
    if importlib.util.find_spec(module_name) is None:
        return {"skipped": f"{module_name} does not exist yet"}
    module = importlib.import_module(module_name)
    workdir = ctx.work / "runs" / module_name.rpartition(".")[2]
    workdir.mkdir(parents=True, exist_ok=True)
    return dict(module.run(workdir))


def run_serving(ctx: Context) -> dict[str, Any]:
    """The serving benchmark (``bench/serving.py``) plugs in the same way."""
    return run(ctx, SERVING)


def write_section(result: dict[str, Any], module_name: str = MODULE, doc: Path = DOC) -> None:
    """Let the benchmark's module refresh its own section of ``doc``."""
    if "skipped" in result or "error" in result:
        return
    module = importlib.import_module(module_name)
    if hasattr(module, "write_section"):
        module.write_section(result, doc)
