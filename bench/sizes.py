"""The sizes ``make bench SIZE=...`` knows: how much data each benchmark generates.

S runs in a few minutes on 2 cores, M (about 10x S) in well under an hour, L is for a bigger
machine. Each dataset is generated with ``ingestion.generator.generate``; ``users`` were
calibrated so the event counts land near the targets (66 events per user over
30 days, 200 over 365 days, 6.3 in a single day).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# Every dataset starts here: long enough ago that Dagster has partitions for all of it.
FIRST_DAY = dt.date(2025, 1, 1)


@dataclass(frozen=True)
class Size:
    name: str
    # The month: 30 days, the input of the load and end-to-end benchmarks.
    month_users: int
    # The year: 365 days, the history the history and backfill benchmarks build on.
    year_users: int
    # One big day for the memory benchmark (10M events at M, the figure).
    big_day_users: int
    repeats: int
    # One-day dbt runs actually timed in the backfill benchmark (the rest are extrapolated).
    one_day_runs: int
    # The memory target for the big day, scaled with its size (4 GB for 10M events).
    memory_target_bytes: int

    @property
    def month_days(self) -> int:
        return 30

    @property
    def year_days(self) -> int:
        return 365


GB = 1024**3

SIZES = {
    # XS is for the harness's own smoke test (tests/bench), not a measurement.
    "XS": Size("XS", 150, 100, 2_000, 1, 2, memory_target_bytes=4 * GB // 1000),
    "S": Size("S", 15_200, 4_950, 160_000, 3, 10, memory_target_bytes=4 * GB // 10),
    "M": Size("M", 152_000, 49_500, 1_600_000, 3, 90, memory_target_bytes=4 * GB),
    "L": Size("L", 760_000, 247_000, 1_600_000, 3, 90, memory_target_bytes=4 * GB),
}
