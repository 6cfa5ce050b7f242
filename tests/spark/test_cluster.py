"""The Spark engine's cluster (common/spark.py, `sluice spark up|down|status`): real JVMs on
127.0.0.1, started from the venv's pyspark."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from common.settings import Settings
from common.spark import SparkError, down, status, thrift_connection, up
from tests.spark.conftest import spark_settings

SLUICE = str(Path(sys.executable).with_name("sluice"))


def query(settings: Settings, sql: str) -> list[tuple[object, ...]]:
    connection = thrift_connection(settings)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        connection.close()


def master_json(settings: Settings) -> dict[str, object]:
    url = f"http://127.0.0.1:{settings.spark_ui_port}/json/"
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, object] = json.load(response)
    return data


def processes_of(settings: Settings) -> list[int]:
    """Every process whose command line names this cluster's folder (JVMs and executors)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if str(settings.spark_dir) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_thrift_server_answers_sql_in_utc(spark_cluster: Settings) -> None:
    assert query(spark_cluster, "select 1 + 1") == [(2,)]
    assert query(spark_cluster, "select current_timezone()") == [("UTC",)]


def test_master_lists_two_alive_workers(spark_cluster: Settings) -> None:
    workers = master_json(spark_cluster)["workers"]
    assert isinstance(workers, list)
    assert [worker["state"] for worker in workers] == ["ALIVE", "ALIVE"]
    assert all(worker["cores"] == 1 for worker in workers)


def test_a_job_runs_on_the_executors(spark_cluster: Settings) -> None:
    assert query(spark_cluster, "select count(*) from range(1000000)") == [(1_000_000,)]
    # The Thrift server is the master's one application, holding both workers' cores.
    apps = master_json(spark_cluster)["activeapps"]
    assert isinstance(apps, list)
    assert [(app["name"], app["cores"]) for app in apps] == [("Sluice Thrift server", 2)]


def test_status_reports_everything_up(spark_cluster: Settings) -> None:
    report = status(spark_cluster)
    assert report.up
    assert [process.name for process in report.processes] == [
        "master",
        "worker-1",
        "worker-2",
        "thrift",
    ]
    assert report.workers_alive == 2
    assert report.thrift_answering
    assert report.master_url == f"spark://127.0.0.1:{spark_cluster.spark_master_port}"


def test_up_twice_is_harmless(spark_cluster: Settings) -> None:
    before = status(spark_cluster)
    assert up(spark_cluster) is None
    after = status(spark_cluster)
    assert after.up
    assert [p.pid for p in after.processes] == [p.pid for p in before.processes]


def test_java_missing_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = spark_settings(str(tmp_path / "data"))
    with pytest.raises(SparkError, match=r"Java 17.*apt-get install openjdk-17-jre-headless"):
        up(settings)
    assert not (settings.spark_dir / "run").exists()  # nothing was started


def test_a_taken_port_names_its_setting(tmp_path: Path) -> None:
    settings = spark_settings(str(tmp_path / "data"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.spark_thrift_port))
        taken.listen()
        with pytest.raises(SparkError, match="SLUICE_SPARK_THRIFT_PORT"):
            up(settings)


def test_a_stale_pid_file_is_cleaned(tmp_path: Path) -> None:
    settings = spark_settings(str(tmp_path / "data"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = settings.spark_dir / "run"
    run.mkdir(parents=True)
    (run / "master.pid").write_text(f"{dead.pid}\n")
    report = status(settings)
    assert not report.master.alive
    assert not report.up
    assert not (run / "master.pid").exists()
    assert down(settings) == []


def test_cli_up_status_down_stops_every_process(tmp_path: Path) -> None:
    """A second, one-worker cluster driven through the CLI: after `down` nothing is left."""
    settings = spark_settings(str(tmp_path / "data"), workers=1)
    env = {
        **os.environ,
        "SLUICE_DATA_DIR": str(settings.data_dir),
        "SLUICE_WAREHOUSE_ENGINE": "spark",
        "SLUICE_SPARK_MASTER_PORT": str(settings.spark_master_port),
        "SLUICE_SPARK_UI_PORT": str(settings.spark_ui_port),
        "SLUICE_SPARK_THRIFT_PORT": str(settings.spark_thrift_port),
        "SLUICE_SPARK_WORKERS": "1",
    }

    def sluice(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SLUICE, "spark", *args], env=env, capture_output=True, text=True, timeout=300
        )

    try:
        started = sluice("up")
        assert started.returncode == 0, started.stderr
        assert "Spark cluster up" in started.stdout
        running = sluice("status")
        assert running.returncode == 0, running.stdout + running.stderr
        assert "1 of 1 workers alive" in running.stdout
        assert "answers" in running.stdout
        # The JVMs, plus the executor the worker started for the Thrift server.
        assert len(processes_of(settings)) >= 4
    finally:
        stopped = sluice("down")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped thrift, worker-1, master" in stopped.stdout
    assert processes_of(settings) == []
    assert list((settings.spark_dir / "run").glob("*.pid")) == []
    after = sluice("status")
    assert after.returncode == 1
    assert "stopped" in after.stdout
