"""Data directories, datasets and dbt invocations the benchmarks share.

Each benchmark gets its own data directory (its own ``SLUICE_DATA_DIR``) under the run's
work folder, so nothing touches the user's ``data/``. Datasets are generated once per run
and reused read-only: a benchmark links the files it needs into its own landing folder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from bench.measure import Run, run_process, run_worker
from bench.sizes import FIRST_DAY
from common.settings import dbt_executable
from orchestration.transform.window import WINDOW_BUILD, window_env

SEED = 7


@dataclass
class Dataset:
    """Landing files generated once, with what the generator reported."""

    name: str
    first_day: dt.date
    days: int
    files: list[Path]
    events: int
    lines: int
    generate_run: Run

    @property
    def last_day(self) -> dt.date:
        return self.first_day + dt.timedelta(days=self.days - 1)

    def files_for(self, first: dt.date, last: dt.date) -> list[Path]:
        """The daily files delivered on first..last (files are named by delivery day)."""
        wanted = {
            f"events-{(first + dt.timedelta(days=i)).isoformat()}.jsonl"
            for i in range((last - first).days + 1)
        }
        return [f for f in self.files if f.name in wanted]


def generate_dataset(work: Path, source: Path, name: str, days: int, users: int) -> Dataset:
    out = work / "datasets" / name
    run = run_worker(
        "generate",
        {"out": out, "start": FIRST_DAY.isoformat(), "days": days, "users": users, "seed": SEED},
        source,
    )
    files = [Path(f) for f in run.result["files"]]
    return Dataset(name, FIRST_DAY, days, files, run.result["events"], run.result["lines"], run)


@dataclass
class DataDir:
    """One Sluice data directory: its environment, landing folder and warehouse."""

    root: Path
    start_date: dt.date
    # The checkout whose code runs (see bench/__main__.py: a snapshot of HEAD by default).
    source: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.landing.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "bench.log"

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse" / "sluice.duckdb"

    @property
    def env(self) -> dict[str, str]:
        return {
            "SLUICE_DATA_DIR": str(self.root),
            "SLUICE_START_DATE": self.start_date.isoformat(),
            "SLUICE_WAREHOUSE_PATH": str(self.warehouse),
            "DAGSTER_HOME": str(self.root / "dagster"),
        }

    def land(self, files: list[Path]) -> None:
        """Link files into the landing folder (hard links: same bytes, no copy)."""
        for source in files:
            target = self.landing / source.name
            if not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    target.write_bytes(source.read_bytes())

    def load(self) -> Run:
        return run_worker("sluice_load", {}, self.source, env=self.env)

    def dbt_build(self, first: dt.date | None, last: dt.date | None, *extra: str) -> DbtRun:
        """``dbt build`` over first..last (both None: the whole history) as Sluice's runs
        invoke it (``orchestration.transform.window``: without unit tests, the window in the
        environment), plus ``extra`` arguments; timed."""
        project = self.source / "dbt_project"
        args = [dbt_executable(), *WINDOW_BUILD, *extra]
        env = dict(self.env)
        if first is not None and last is not None:
            env.update(window_env(first, last))
        target = self.root / "dbt_target"
        args += [
            "--project-dir", str(project),
            "--profiles-dir", str(project),
            "--target-path", str(target),
            "--log-path", str(self.root / "dbt_logs"),
        ]  # fmt: skip
        run = run_process(args, env=env, cwd=project, log=self.log)
        results = json.loads((target / "run_results.json").read_text())
        return DbtRun(run, results)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def marts(self, first: dt.date, last: dt.date) -> tuple[list[tuple[Any, ...]], ...]:
        """(dau rows, revenue rows) for first..last, in the same shape as the baseline's."""
        window = " where event_date between ? and ? order by event_date"
        return (
            self.query("select event_date, active_users from marts.dau" + window, [first, last]),
            self.query(
                "select event_date, revenue_usd, orders, paying_users "
                "from marts.revenue_daily" + window,
                [first, last],
            ),
        )


@dataclass
class DbtRun:
    """A dbt invocation: the whole process, and dbt's own timings from run_results.json."""

    run: Run
    results: dict[str, Any]

    @property
    def node_seconds(self) -> dict[str, float]:
        return {r["unique_id"]: float(r["execution_time"]) for r in self.results["results"]}

    @property
    def models_seconds(self) -> float:
        """Time dbt spent in models (not tests, seeds or start-up)."""
        return sum(t for uid, t in self.node_seconds.items() if uid.startswith("model."))

    @property
    def nodes_seconds(self) -> float:
        """Time dbt spent in every node: models, tests and seeds."""
        return sum(self.node_seconds.values())

    def check_success(self) -> None:
        failed = [
            r["unique_id"]
            for r in self.results["results"]
            if r["status"] not in ("success", "pass", "warn")
        ]
        if failed:
            raise RuntimeError(f"dbt nodes failed: {failed}")
