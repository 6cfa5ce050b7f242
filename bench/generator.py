"""Benchmark 6, the generator: events per second that ``ingestion.generator.generate`` writes,
against writing the same bytes again (read, write, fsync, rename: the I/O floor).

Checks: the generator is deterministic (every repetition writes the same bytes) and the copy
counts as many lines as the generator reports.
"""

from __future__ import annotations

import shutil
from typing import Any

from bench.context import Context
from bench.measure import expect_equal, ratio, run_worker, summarize
from bench.sizes import FIRST_DAY
from bench.workspace import SEED


def run(ctx: Context) -> dict[str, Any]:
    size = ctx.size
    runs = [ctx.month.generate_run]
    copies = []
    for repeat in range(ctx.repeats):
        scratch = ctx.work / "runs" / f"generator-{repeat}"
        if repeat > 0:
            runs.append(
                run_worker(
                    "generate",
                    {
                        "out": scratch / "gen",
                        "start": FIRST_DAY.isoformat(),
                        "days": size.month_days,
                        "users": size.month_users,
                        "seed": SEED,
                    },
                    ctx.source,
                )
            )
            expect_equal(
                "generator: bytes written", runs[-1].result["bytes"], runs[0].result["bytes"]
            )
        copies.append(
            run_worker(
                "copy_files",
                {"files": runs[0].result["files"], "out": scratch / "copy"},
                ctx.source,
            )
        )
        expect_equal("generator: lines", copies[-1].result["lines"], runs[0].result["lines"])
        if not ctx.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    ours, base = summarize(runs), summarize(copies)
    events = runs[0].result["events"]
    per_second = events / ours["seconds"]["median"]
    return {
        "title": "Generator: events written per second",
        "input": f"the month dataset: {events:,} events, {runs[0].result['bytes'] / 1e6:,.0f} MB",
        "rows": [
            {"label": "baseline: write the same bytes again (with fsync)", **base, "ratio": 1.0},
            {"label": "Sluice: ingestion.generator.generate", **ours, "ratio": ratio(ours, base)},
        ],
        "target": "none (reported)",
        "measured": f"{per_second:,.0f} events/s",
        "met": None,
        "checked": "same number of bytes on every repetition; line counts agree",
        "events_per_second": per_second,
    }
