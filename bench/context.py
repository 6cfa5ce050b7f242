"""What one benchmark run shares: the size, the work folder and the generated datasets."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from bench.sizes import FIRST_DAY, Size
from bench.workspace import DataDir, Dataset, generate_dataset


@dataclass
class Context:
    size: Size
    work: Path
    # The checkout being benchmarked: its Python code, its dbt project.
    source: Path
    repeats: int
    keep: bool = False
    notes: list[str] = field(default_factory=list)

    @cached_property
    def month(self) -> Dataset:
        """30 days: the input of the load and end-to-end benchmarks."""
        return generate_dataset(
            self.work, self.source, "month", self.size.month_days, self.size.month_users
        )

    @cached_property
    def year(self) -> Dataset:
        """365 thinner days: the history for the history and backfill benchmarks."""
        return generate_dataset(
            self.work, self.source, "year", self.size.year_days, self.size.year_users
        )

    @cached_property
    def big_day(self) -> Dataset:
        """One day as big as the memory target is written for."""
        return generate_dataset(self.work, self.source, "big_day", 1, self.size.big_day_users)

    def data_dir(self, name: str) -> DataDir:
        """A fresh, empty Sluice data directory for one benchmark (or one repetition)."""
        root = self.work / "runs" / name
        if root.exists():
            shutil.rmtree(root)
        return DataDir(root, FIRST_DAY, self.source)

    def done_with(self, data_dir: DataDir) -> None:
        """Free the disk a finished data directory holds, unless asked to keep it."""
        if not self.keep:
            shutil.rmtree(data_dir.root, ignore_errors=True)
