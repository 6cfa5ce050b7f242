"""The serving snapshot as readers meet it: complete, never locked, open in DuckDB 1.x.

The data directory built once for tests/serving (conftest.py) is read here as a BI tool or a
notebook would.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from common.settings import REPO_DIR, Settings
from serving.snapshot import connect_snapshot, publish_parquet, publish_snapshot, read_version
from tests.serving import activity
from tests.serving.conftest import DAYS, FIRST, LAST
from tests.serving.fake_marts import FakeMarts, build_warehouse

pytestmark = pytest.mark.slow

DUCKDB1_PYTHON = REPO_DIR / ".venv-duckdb1" / "bin" / "python"


@pytest.fixture(scope="module")
def duckdb1_python() -> Path:
    """A Python with DuckDB 1.x (``make prepare`` installs it; built here when missing)."""
    if not DUCKDB1_PYTHON.exists():
        subprocess.run(["make", "-s", ".venv-duckdb1/.installed"], cwd=REPO_DIR, check=True)
    return DUCKDB1_PYTHON


def warehouse_marts(settings: Settings) -> dict[str, list[tuple]]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        names = [
            row[0]
            for row in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'marts' order by 1"
            ).fetchall()
        ]
        return {n: con.execute(f"select * from marts.{n} order by all").fetchall() for n in names}


def test_the_run_published_every_mart_with_its_version(built: Settings) -> None:
    with dg.DagsterInstance.from_config(str(built.dagster_home)) as instance:
        run = instance.get_runs(filters=dg.RunsFilter(job_name="elt"))[0]
    expected = warehouse_marts(built)
    with connect_snapshot(built.serving_path) as con:
        version = read_version(con)
        copied = {
            n: con.execute(f"select * from marts.{n} order by all").fetchall() for n in expected
        }
    assert version.run_id == run.run_id
    assert copied == expected
    assert version.row_counts == {f"marts.{n}": len(rows) for n, rows in expected.items()}
    assert version.row_counts["marts.dau"] == DAYS
    assert not list(built.serving_path.parent.glob(".*partial*")), "a partial file was left"


def test_activity_marts_equal_a_plain_python_computation_from_fct_events(
    built: Settings,
) -> None:
    with duckdb.connect(str(built.warehouse_path), read_only=True) as con:
        events = [activity.Event(*row) for row in con.execute(activity.FCT_EVENTS_SQL).fetchall()]
    with connect_snapshot(built.serving_path) as con:

        def mart(name: str, key_columns: int) -> dict[tuple, tuple]:
            rows = con.execute(f"select * from marts.{name}").fetchall()
            return by_key(rows, key_columns)

        assert mart("wau_mau", 1) == by_key(activity.wau_mau(events), 1)
        assert mart("event_counts_daily", 3) == by_key(activity.event_counts_daily(events), 3)
        assert mart("funnel_daily", 1) == by_key(activity.funnel_daily(events), 1)
        assert mart("retention_weekly", 2) == by_key(activity.retention_weekly(events), 2)
        funnel = mart("funnel_daily", 1)
    # The generated users do go through the funnel, so the comparison compared something.
    assert sum(row[0] for row in funnel.values()) > 0
    assert sum(row[2] for row in funnel.values()) > 0


def by_key(rows: list[tuple], key_columns: int) -> dict[tuple, tuple]:
    """Rows by their key columns, floats rounded: the order and the last bits do not matter."""
    out = {}
    for row in rows:
        values = tuple(round(v, 9) if isinstance(v, float) else v for v in row[key_columns:])
        out[row[:key_columns]] = values
    assert len(out) == len(rows), "duplicate keys"
    return out


def test_a_duckdb_1x_client_opens_the_snapshot(built: Settings, duckdb1_python: Path) -> None:
    code = (
        "import sys, duckdb\n"
        "assert duckdb.__version__.startswith('1.'), duckdb.__version__\n"
        "con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "print(con.execute('select run_id from sluice_meta.snapshot_version').fetchone()[0])\n"
        "print(con.execute('select count(*), sum(active_users) from marts.dau').fetchone())\n"
    )
    result = subprocess.run(
        [str(duckdb1_python), "-c", code, str(built.serving_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with connect_snapshot(built.serving_path) as con:
        run_id = read_version(con).run_id
        dau = con.execute("select count(*), sum(active_users) from marts.dau").fetchone()
    assert result.stdout.splitlines() == [run_id, str(dau)]


def test_readers_polling_during_a_backfill_never_fail_and_see_whole_versions(
    built: Settings,
) -> None:
    """A reader every 50 ms, and one holding a connection open, while a backfill runs.

    Each poll opens and closes its connection: within one process DuckDB shares one database
    per path, so a new connection sees a new version only once all older ones are closed.
    """
    errors: list[str] = []
    seen: set[str] = set()
    reads = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                with connect_snapshot(built.serving_path) as con:
                    version = read_version(con)
                    for table, recorded in version.row_counts.items():
                        row = con.execute(f"select count(*) from {table}").fetchone()
                        if row is None or row[0] != recorded:
                            errors.append(f"{table}: {row} rows, version says {recorded}")
                seen.add(version.run_id)
                reads += 1
            except Exception as error:  # every failure counts, lock errors first of all
                errors.append(f"{type(error).__name__}: {error}")
            time.sleep(0.05)

    code = (
        "import sys, datetime as dt\n"
        "from common.settings import load_settings\n"
        "from sluice.runs import materialize_range\n"
        "o = materialize_range(load_settings(), dt.date.fromisoformat(sys.argv[1]),"
        " dt.date.fromisoformat(sys.argv[2]), job_name='build')\n"
        "print(o.run_id, o.message)\n"
        "sys.exit(0 if o.success else 1)\n"
    )
    # Another process (a dashboard server) holds a connection open through the publish.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(built.serving_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    held_run_id = holder.stdout.readline().strip()
    reader = threading.Thread(target=poll)
    reader.start()
    try:
        backfill = subprocess.run(
            [sys.executable, "-c", code, FIRST.isoformat(), LAST.isoformat()],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **built.subprocess_env()},
        )
        time.sleep(0.3)  # a few reads of the new version
    finally:
        done.set()
        reader.join()
        held_output, _ = holder.communicate("\n", timeout=60)
    assert backfill.returncode == 0, backfill.stdout[-2000:] + backfill.stderr[-2000:]
    new_run_id = backfill.stdout.split()[0]
    assert errors == []
    assert reads > 50
    assert seen == {held_run_id, new_run_id}
    # The connection held open through the publish still reads its own, complete version.
    assert holder.returncode == 0
    assert held_output.split() == [held_run_id, "complete"]


# Opens the snapshot, says which version it sees, waits for a line, then reads it again.
HOLDER = """
import sys
from pathlib import Path
from serving.snapshot import connect_snapshot, publish_parquet, publish_snapshot, read_version
con = connect_snapshot(Path(sys.argv[1]))
print(read_version(con).run_id, flush=True)
sys.stdin.readline()
version = read_version(con)
whole = all(
    con.execute(f"select count(*) from {table}").fetchone()[0] == rows
    for table, rows in version.row_counts.items()
)
print(version.run_id, "complete" if whole else "INCOMPLETE")
"""


def test_the_marts_are_also_parquet_files_partitioned_by_day(built: Settings) -> None:
    current = built.serving_parquet_dir / "current"
    assert current.is_symlink()
    with connect_snapshot(built.serving_path) as con:
        version = read_version(con)
        for qualified in version.row_counts:
            schema, table = qualified.split(".")
            folder = current / schema / table
            files = sorted(folder.rglob("*.parquet"))
            assert files, folder
            columns = con.execute(f"select * from {qualified} limit 0").description or []
            names = ", ".join(f'"{d[0]}"' for d in columns)
            from_parquet = con.execute(
                f"select {names} from read_parquet(?, hive_partitioning = true) order by all",
                [[str(f) for f in files]],
            ).fetchall()
            assert from_parquet == con.execute(f"select * from {qualified} order by all").fetchall()
    days = sorted(p.name for p in (current / "marts" / "dau").iterdir())
    assert days == [f"event_date={FIRST + dt.timedelta(days=n)}" for n in range(DAYS)]
    assert (current / "marts" / "retention_weekly" / "data.parquet").is_file()


def test_each_parquet_publish_swaps_current_whole_and_keeps_two_versions(tmp_path: Path) -> None:
    warehouse, snapshot = tmp_path / "warehouse.duckdb", tmp_path / "snapshot.duckdb"
    build_warehouse(warehouse, FakeMarts(days=3, last=LAST))
    out_dir = tmp_path / "parquet"
    published = []
    for run_id in ("run-1", "run-2", "run-3"):
        version = publish_snapshot(warehouse, snapshot, run_id)
        current = publish_parquet(snapshot, out_dir, version)
        published.append(current.resolve().name)
        days = sorted(p.name for p in (current / "marts" / "dau").iterdir())
        assert days == [f"event_date={LAST - dt.timedelta(days=n)}" for n in (2, 1, 0)]
    assert len(set(published)) == 3
    # The two newest versions stay, and no partial folder or link is left beside them.
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["current", *published[1:]])
    assert not list(tmp_path.glob(".*")), "a partial snapshot was left"


def _python_examples() -> list[str]:
    text = (REPO_DIR / "docs" / "serving.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_python_examples_in_the_serving_doc_run(built: Settings) -> None:
    examples = _python_examples()
    assert len(examples) == 4  # Python, pandas, SQLAlchemy, Parquet
    for example in examples:
        # The examples use the default relative path data/serving/sluice.duckdb.
        result = subprocess.run(
            [sys.executable, "-c", example],
            cwd=built.data_dir.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, example + result.stderr
        assert result.stdout.strip(), example
