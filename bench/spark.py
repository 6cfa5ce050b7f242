"""Benchmark: the Spark engine (SLUICE_WAREHOUSE_ENGINE=spark) end to end on a standalone
cluster on 127.0.0.1, against the hand-written DuckDB SQL script (``bench/baseline.py``) and
Sluice on DuckDB, from the same landing files in the same run; and the same month's dbt build
on 1 and on 2 workers.

Each ``sluice materialize`` runs in its own process (``bench.worker``), as in the end-to-end
benchmark; for Spark its environment names the engine and the cluster's ports. The cluster is
started here (``common.spark.up``, timed on its own, not part of the end-to-end figure) on the
Spark data directory of the run's work folder, and stopped at the end, failure or not. Its
JVMs are not children of the measured process, so their summed RSS (master, workers with
their executors, Thrift server) is sampled beside it and added to its peak.

Checks: dau and revenue_daily of the Spark run's serving snapshot (what BI tools read) and of
the DuckDB run's warehouse equal the baseline's on every day, revenue to the cent. No target:
the figures say what a loopback cluster on this machine costs, and the notes say why.

Skipped, with the reason, when pyspark, dbt-spark or Java is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psutil

from bench import baseline
from bench.context import Context
from bench.measure import Run, Stats, expect_rows_equal, ratio, run_worker, summarize
from bench.workspace import DataDir
from common.settings import Settings, load_settings

# One end-to-end run on Spark needs a cluster of its own (the tables and the metastore live
# in the data directory): the Spark rows take fewer runs than the size's repeats.
SPARK_RUNS = {"XS": 1, "S": 1, "M": 1, "L": 1}
SCALE_RUNS = {"XS": 1, "S": 2, "M": 1, "L": 1}
WORKER_COUNTS = (1, 2)
CLUSTER_SAMPLE_SECONDS = 0.2
MIB = 1024**2


def missing() -> str | None:
    """Why the Spark engine cannot run here, or None."""
    from common.spark import SparkError, java_home

    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if importlib.util.find_spec("dbt.adapters.spark") is None:
        return "dbt-spark is not installed (pip install -e '.[spark]')"
    try:
        java_home()
    except SparkError:
        return "no Java (JAVA_HOME, or `java` on PATH): apt-get install openjdk-17-jre-headless"
    return None


def spark_env(data_dir: DataDir, workers: int) -> dict[str, str]:
    """The data directory's environment for the Spark engine, on a cluster of its own."""
    from common.spark import private_cluster_environment

    return {**data_dir.env, **private_cluster_environment(workers)}


class ClusterMemory:
    """Samples the summed RSS of the cluster's JVMs (the pids in ``<spark dir>/run``, with
    their children: a worker's executor) in a thread, while ``sampling()`` lasts."""

    def __init__(self, settings: Settings) -> None:
        self.run_dir = settings.spark_dir / "run"
        self.peak = 0

    def rss(self) -> int:
        total = 0
        for pid_file in self.run_dir.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError, psutil.Error):
                proc = psutil.Process(int(pid_file.read_text().strip()))
                for one in (proc, *proc.children(recursive=True)):
                    with contextlib.suppress(psutil.Error):
                        total += one.memory_info().rss
        return total

    @contextlib.contextmanager
    def sampling(self) -> Iterator[None]:
        self.peak = 0
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                self.peak = max(self.peak, self.rss())
                done.wait(CLUSTER_SAMPLE_SECONDS)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


class Cluster:
    """The benchmark's clusters, one at a time on one data directory; ``stop_all`` stops
    every one it started."""

    def __init__(self, data_dir: DataDir) -> None:
        self.data_dir = data_dir
        self.started: list[Settings] = []
        self.env: dict[str, str] = {}
        self.settings: Settings | None = None

    def start(self, workers: int) -> float:
        """Stop the running cluster, start one of ``workers`` workers; its start seconds."""
        from common.spark import down, up

        if self.settings is not None:
            down(self.settings)
        self.env = spark_env(self.data_dir, workers)
        self.settings = load_settings(self.env)
        self.started.append(self.settings)
        began = time.perf_counter()
        up(self.settings)
        return time.perf_counter() - began

    def stop_all(self) -> None:
        from common.spark import down

        for settings in self.started:
            with contextlib.suppress(Exception):
                down(settings)


def _baseline_marts(database: Path) -> tuple[list[tuple[Any, ...]], ...]:
    with duckdb.connect(str(database), read_only=True) as con:
        return (
            con.execute(baseline.DAU_QUERY).fetchall(),
            con.execute(baseline.REVENUE_QUERY).fetchall(),
        )


def snapshot_marts(path: Path, first: Any, last: Any) -> tuple[list[tuple[Any, ...]], ...]:
    """(dau rows, revenue rows) of a serving snapshot, in the baseline's shape."""
    window = " where event_date between ? and ? order by event_date"
    with duckdb.connect(str(path), read_only=True) as con:
        return (
            con.execute(
                "select event_date, active_users from marts.dau" + window, [first, last]
            ).fetchall(),
            con.execute(
                "select event_date, revenue_usd, orders, paying_users from marts.revenue_daily"
                + window,
                [first, last],
            ).fetchall(),
        )


def du_bytes(path: Path) -> int:
    """Apparent bytes of the files under ``path`` (``du -sb``)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def model_seconds(target_dir: Path) -> dict[str, float]:
    """Per dbt model, its seconds in the newest run_results.json under ``target_dir``."""
    newest = max(
        target_dir.rglob("run_results.json"), key=lambda p: p.stat().st_mtime, default=None
    )
    if newest is None:
        return {}
    results = json.loads(newest.read_text())["results"]
    return {
        r["unique_id"].split(".")[-1]: float(r["execution_time"])
        for r in results
        if r["unique_id"].startswith("model.")
    }


def _split(steps: dict[str, float]) -> dict[str, float]:
    """A run's steps as load / dbt build / the rest (snapshot, checks)."""
    out = {"load": 0.0, "dbt": 0.0, "other": 0.0}
    for key, seconds in steps.items():
        if "dbt" in key:
            out["dbt"] += seconds
        elif "load" in key or "raw" in key or "ingest" in key:
            out["load"] += seconds
        else:
            out["other"] += seconds
    return out


def _with_cluster_rss(run: Run, cluster_peak: int) -> Run:
    return Run(run.seconds, run.peak_rss + cluster_peak, {**run.result, "client": run.peak_rss})


def run(ctx: Context) -> dict[str, Any]:
    why = missing()
    if why is not None:
        print(f"[bench] spark: skipped: {why}", flush=True)
        return {"skipped": why}
    data = ctx.month
    files = [str(f) for f in data.files]
    params: dict[str, Any] = {
        "first": data.first_day.isoformat(),
        "last": data.last_day.isoformat(),
        "steps": True,
    }

    base_runs, duck_runs, duck_builds = [], [], []
    duck_bytes = 0
    duck_models: dict[str, float] = {}
    for repeat in range(ctx.repeats):
        duck = ctx.data_dir(f"spark-duckdb-{repeat}")
        duck.land(data.files)
        database = duck.root / "baseline.duckdb"
        base_runs.append(
            run_worker("baseline_marts", {"files": files, "database": database}, ctx.source)
        )
        duck_runs.append(run_worker("sluice_materialize", params, ctx.source, env=duck.env))
        want = _baseline_marts(database)
        got = duck.marts(data.first_day, data.last_day)
        expect_rows_equal("spark benchmark, DuckDB engine: dau", got[0], want[0])
        expect_rows_equal("spark benchmark, DuckDB engine: revenue_daily", got[1], want[1])
        if repeat == 0:
            duck_bytes = du_bytes(duck.warehouse)
            build = {**params, "job": "build"}
            duck_builds.append(run_worker("sluice_materialize", build, ctx.source, env=duck.env))
            duck_models = model_seconds(load_settings(duck.env).dbt_target_dir)
        ctx.done_with(duck)

    spark_dir = ctx.data_dir("spark")
    spark_dir.land(data.files)
    cluster = Cluster(spark_dir)
    spark_runs: list[Run] = []
    client_peaks: list[int] = []
    scale: dict[int, list[Run]] = {}
    starts: dict[str, float] = {}
    try:
        starts["2 workers (end to end)"] = cluster.start(2)
        assert cluster.settings is not None
        memory = ClusterMemory(cluster.settings)
        idle_rss = memory.rss()
        for _ in range(SPARK_RUNS[ctx.size.name]):
            with memory.sampling():
                one = run_worker("sluice_materialize", params, ctx.source, env=cluster.env)
            client_peaks.append(one.peak_rss)
            spark_runs.append(_with_cluster_rss(one, memory.peak))
            got = snapshot_marts(cluster.settings.serving_path, data.first_day, data.last_day)
            expect_rows_equal("spark benchmark, Spark engine: dau", got[0], want[0])
            expect_rows_equal("spark benchmark, Spark engine: revenue_daily", got[1], want[1])
        spark_models = model_seconds(cluster.settings.dbt_target_dir)
        settings = cluster.settings
        sizes = {
            "landing": sum(f.stat().st_size for f in data.files),
            "lake": du_bytes(settings.lake_dir),
            "spark_tables": du_bytes(settings.spark_warehouse_dir),
            "duckdb_warehouse": duck_bytes,
            "serving_snapshot": du_bytes(settings.serving_path),
        }
        for workers in WORKER_COUNTS:
            starts[f"{workers} worker{'s' if workers > 1 else ''}"] = cluster.start(workers)
            memory = ClusterMemory(cluster.settings)
            build = {**params, "job": "build"}
            for _ in range(SCALE_RUNS[ctx.size.name]):
                with memory.sampling():
                    one = run_worker("sluice_materialize", build, ctx.source, env=cluster.env)
                scale.setdefault(workers, []).append(_with_cluster_rss(one, memory.peak))
    finally:
        cluster.stop_all()
    ctx.done_with(spark_dir)
    return _result(
        ctx, data, base_runs, duck_runs, duck_builds, spark_runs, client_peaks, scale, starts,
        idle_rss, sizes, duck_models, spark_models,
    )  # fmt: skip


def _steps_table(label: str, runs: list[Run]) -> list[str]:
    split = [_split(r.result.get("steps", {})) for r in runs]
    cells = [f"{Stats.of([s[k] for s in split]).median:.1f}" for k in ("load", "dbt", "other")]
    return [label, *cells, f"{Stats.of([r.work_seconds for r in runs]).median:.1f}"]


def _result(
    ctx: Context,
    data: Any,
    base_runs: list[Run],
    duck_runs: list[Run],
    duck_builds: list[Run],
    spark_runs: list[Run],
    client_peaks: list[int],
    scale: dict[int, list[Run]],
    starts: dict[str, float],
    idle_rss: int,
    sizes: dict[str, int],
    duck_models: dict[str, float],
    spark_models: dict[str, float],
) -> dict[str, Any]:
    base = summarize(base_runs)
    duck = summarize(duck_runs)
    spark = summarize(spark_runs)
    spark_vs_base = ratio(spark, base)
    spark_vs_duck = ratio(spark, duck)
    rows = [
        {
            "label": "baseline: hand-written DuckDB SQL script",
            **base,
            "ratio": 1.0,
            "ratio_peak_rss": 1.0,
        },
        {
            "label": "Sluice on DuckDB: sluice materialize",
            **duck,
            "ratio": ratio(duck, base),
            "ratio_peak_rss": ratio(duck, base, "peak_rss"),
        },
        {
            "label": "Sluice on Spark, 2 workers x 1 core: sluice materialize "
            "(RSS: Dagster/dbt process tree + the cluster's JVMs)",
            **spark,
            "ratio": spark_vs_base,
            "ratio_peak_rss": ratio(spark, base, "peak_rss"),
        },
    ]
    events = data.events
    split_rows = [
        _steps_table("DuckDB, materialize (median)", duck_runs),
        _steps_table("Spark, 2 workers, materialize", spark_runs),
        _steps_table("DuckDB, build job only", duck_builds),
    ]
    for workers, runs in scale.items():
        split_rows.append(_steps_table(f"Spark, {workers} worker(s), build job only", runs))
    scale_rows = []
    one = Stats.of([r.work_seconds for r in scale[1]]).median
    for workers, runs in scale.items():
        stats = Stats.of([r.work_seconds for r in runs])
        peak = Stats.of([float(r.peak_rss) for r in runs]).median
        scale_rows.append(
            [
                f"{workers} x 1 core",
                f"{stats.median:.1f} ({stats.low:.1f}-{stats.high:.1f}, n={stats.n})",
                f"{one / stats.median:.2f}x",
                f"{peak / MIB:,.0f}",
            ]
        )
    duck_build = Stats.of([r.work_seconds for r in duck_builds]).median
    spark_build_2 = Stats.of([r.work_seconds for r in scale[2]]).median
    slow = sorted(spark_models.items(), key=lambda kv: -kv[1])[:6]
    size_rows = [
        [what, f"{n / MIB:,.1f}", f"{n / events:,.1f}"]
        for what, n in (
            ("landing JSONL files", sizes["landing"]),
            ("lake (dlt's Parquet/Delta of raw events)", sizes["lake"]),
            ("Spark tables (spark/warehouse: facts, marts)", sizes["spark_tables"]),
            ("DuckDB warehouse file (raw, facts, marts)", sizes["duckdb_warehouse"]),
            ("serving snapshot (Spark run)", sizes["serving_snapshot"]),
        )
    ]
    client = Stats.of([float(p) for p in client_peaks]).median
    cluster_peak = spark["peak_rss"]["median"] - client
    return {
        "title": "Spark engine: end to end on a loopback cluster, 1 vs 2 workers",
        "input": f"the month dataset, {len(data.files)} files, {data.lines:,} lines, "
        f"{events:,} events",
        "rows": rows,
        "target": "none (what Spark costs on one 2-core machine)",
        "measured": f"Spark {spark_vs_base:.1f}x baseline, {spark_vs_duck:.1f}x Sluice on "
        f"DuckDB (DuckDB {ratio(duck, base):.1f}x baseline); build on 2 workers "
        f"{one / spark_build_2:.2f}x the speed of 1",
        "met": None,
        "checked": "dau and revenue_daily of both engines equal the baseline's on all days "
        "(revenue to the cent; Spark's read from its serving snapshot)",
        "spark_runs": len(spark_runs),
        "scale_runs": {str(k): len(v) for k, v in scale.items()},
        "cluster_start_seconds": starts,
        "cluster_idle_rss": idle_rss,
        "bytes": sizes,
        "bytes_per_event": {k: v / events for k, v in sizes.items()},
        "dbt_model_seconds": {"duckdb": duck_models, "spark": spark_models},
        "tables": [
            {
                "caption": "Where the time goes (seconds of each Dagster step, median): "
                "load = dlt, dbt = one dbt build of the 30 days, other = snapshot and checks",
                "header": ["run", "load s", "dbt s", "other s", "whole run s"],
                "rows": split_rows,
            },
            {
                "caption": "The month's build job (dbt build + snapshot, after one load) on 1 and "
                "2 workers of 1 core each; RSS is the Dagster/dbt tree + the cluster",
                "header": ["workers", "seconds, median (min-max)", "speed-up vs 1", "peak RSS MiB"],
                "rows": scale_rows,
            },
            {
                "caption": "Bytes on disk (apparent size, du -sb) for the month",
                "header": ["what", "MiB", "bytes per event"],
                "rows": size_rows,
            },
        ],
        "notes": [
            "Cluster start (sluice spark up: master, workers, Thrift server answering), not in "
            "the end-to-end figure: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in starts.items())
            + f"; idle cluster RSS {idle_rss / MIB:,.0f} MiB.",
            f"Spark end to end: {len(spark_runs)} run(s) (each needs a cluster and data "
            f"directory of its own); build on 1 vs 2 workers: {SCALE_RUNS[ctx.size.name]} runs "
            f"each. Peak RSS of the Spark run: Dagster/dbt tree {client / MIB:,.0f} MiB + "
            f"cluster {cluster_peak / MIB:,.0f} MiB (sampled apart, summed: an upper bound).",
            f"Build job only: Spark (2 workers) {spark_build_2:.1f} s against DuckDB "
            f"{duck_build:.1f} s ({spark_build_2 / duck_build:.1f}x).",
            "Slowest dbt models on Spark (s): "
            + ", ".join(f"{name} {sec:.1f}" for name, sec in slow)
            + f"; the {len(spark_models)} models sum to {sum(spark_models.values()):.1f} s on "
            f"Spark, {sum(duck_models.values()):.1f} s on DuckDB.",
            "The machine has 2 cores: a second worker adds a task slot, not a core; the "
            "Thrift server (the driver), the master and the Dagster/dbt process share the same "
            "2 cores.",
        ],
    }
