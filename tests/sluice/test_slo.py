"""The SLOs of ``ops/slos.yml``: the file's checks, the batch freshness SLI over the marts'
builds (computed from a Dagster instance), and ``sluice slo`` counting what a real ``sluice
serve`` answered, across a restart, and what ``sluice stream`` made visible."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from common.settings import SLO_FILE
from orchestration.prepare import prepare_dagster_home
from realtime import read
from realtime.windows import ADDED
from sluice.slo import (
    BATCH_FRESHNESS,
    COLLECT_CACHE_SECONDS,
    MartBuilds,
    SloCollector,
    SloFileError,
    freshness_counts,
    is_fresh,
    load_slos,
    mart_builds,
    measure,
)
from tests.ingestion.api.conftest import (
    SLUICE,
    Server,
    make_server,  # noqa: F401  (a fixture)
)
from tests.sluice.run_cli import sluice


def test_the_shipped_slo_file_declares_every_tier() -> None:
    slos = load_slos(SLO_FILE)
    assert slos.window == dt.timedelta(days=28)
    assert {slo.tier for slo in slos.slos} == {"ingest", "batch", "serving", "real-time"}
    lag = slos.get("realtime_lag")
    assert lag is not None and lag.threshold_seconds == 5.0 and lag.objective == 0.95


GOOD = """window_days: 28
slos:
  ingest_availability:
    tier: ingest
    description: Not 5xx.
    objective: 0.999
  query_latency:
    tier: serving
    description: Fast.
    objective: 0.95
    threshold_seconds: 1.0
"""


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (("window_days: 28", "window_days: 0"), ("line 1", "window_days")),
        (("  query_latency:", "  query_speed:"), ("line 7", "unknown SLO 'query_speed'")),
        (("objective: 0.95", "objective: 95"), ("line 10", "query_latency", "objective")),
        (("threshold_seconds: 1.0", "threshold_seconds: 0.3"), ("line 11", "0.25, 0.5, 1")),
        (("    objective: 0.999", "    objective: 0.999\n    threshold_seconds: 1"), ("line 7",)),
        (("description: Fast.", "descripton: Fast."), ("line 9", "unknown field 'descripton'")),
        (("slos:", "slos: ["), ("cannot read the SLO file",)),
    ],
)
def test_a_broken_slo_file_is_named_with_its_line_and_field(
    tmp_path: Path, change: tuple[str, str], needles: tuple[str, ...]
) -> None:
    path = tmp_path / "slos.yml"
    path.write_text(GOOD)
    assert [slo.name for slo in load_slos(path).slos] == ["ingest_availability", "query_latency"]
    path.write_text(GOOD.replace(*change, 1))
    with pytest.raises(SloFileError) as error:
        load_slos(path)
    assert str(error.value).startswith(str(path))
    for needle in needles:
        assert needle in str(error.value)


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_batch_freshness_counts_the_minutes_past_03_00_until_yesterday_is_built() -> None:
    builds = MartBuilds(
        built_at={
            # A backfill of two days, then 11-11 built two hours late, 11-12 not yet.
            dt.date(2026, 11, 9): _at("2026-11-11 02:00"),
            dt.date(2026, 11, 10): _at("2026-11-11 02:00"),
            dt.date(2026, 11, 11): _at("2026-11-12 05:00"),
        },
        first_build=_at("2026-11-11 02:00"),
        deadline_cron="0 3 * * *",
        start_date=dt.date(2026, 11, 1),
    )
    now = _at("2026-11-13 04:00")
    # From the first build on: 50 hours, of which 11-12 03:00-05:00 and 11-13 03:00-04:00 stale.
    assert freshness_counts(builds, now - 28 * 86400, now) == (3000, 2820)
    assert freshness_counts(builds, now - 3600, now) == (60, 0)
    assert freshness_counts(builds, _at("2026-11-12 04:00"), _at("2026-11-12 06:00")) == (120, 60)
    assert is_fresh(builds, now) is False
    assert is_fresh(builds, _at("2026-11-13 02:59")) is True
    assert is_fresh(builds, _at("2026-11-12 05:01")) is True
    # Days before the first partition are never due.
    later_start = MartBuilds({}, _at("2026-11-11 02:00"), "0 3 * * *", dt.date(2026, 11, 13))
    assert freshness_counts(later_start, now - 28 * 86400, now) == (3000, 3000)
    assert is_fresh(MartBuilds({}, None, "0 3 * * *", dt.date(2026, 11, 1)), now) is None


def test_mart_builds_are_read_from_the_dagster_instance(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(dt.date(2026, 11, 1))
    prepare_dagster_home(settings)
    before = time.time()
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        for key, partition in (
            ("dau", "2026-11-10"),
            ("dau", "2026-11-11"),
            ("revenue_daily", "2026-11-10"),
            ("dau", "2026-11-10"),  # a rebuild: the first build is the one that counts
            ("retention_weekly", None),
        ):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=["marts", key], partition=partition)
            )
            time.sleep(0.01)
    builds = mart_builds(settings, before - 1)
    # 11-11 has only one of the two daily marts; the weekly table is not a daily mart.
    assert list(builds.built_at) == [dt.date(2026, 11, 10)]
    assert builds.first_build is not None
    assert before <= builds.first_build < builds.built_at[dt.date(2026, 11, 10)] < time.time()
    assert builds.deadline_cron == "0 3 * * *"
    slos = load_slos()
    [freshness] = [
        s for s in measure(settings, slos, builds=builds) if s.slo.name == BATCH_FRESHNESS
    ]
    assert freshness.events == 0  # no whole minute since the first build yet
    # sluice slo finds the instance from SLUICE_DATA_DIR alone (its dagster.yaml names its home
    # by DAGSTER_HOME, which a user's shell does not set).
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    result = subprocess.run([SLUICE, "slo"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert _row(result.stdout, "batch_freshness")[3:5] == ["-", "0"]


def _row(output: str, name: str) -> list[str]:
    """The cells of ``sluice slo``'s row for ``name``."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line)]
        if len(cells) > 2 and cells[1].split(" ")[0] == name:
            return cells[1:-1]
    raise AssertionError(f"no row {name} in\n{output}")


def test_sluice_slo_counts_what_sluice_serve_answered_across_a_restart(  # type: ignore[no-untyped-def]
    make_server,  # noqa: F811  (the fixture)
    tmp_path: Path,
) -> None:
    server = make_server()
    key = server.create_key("web")
    # sluice stream beside it, as on a laptop: what the API acknowledges becomes visible.
    with (tmp_path / "stream.log").open("ab") as log:
        stream = subprocess.Popen([SLUICE, "stream"], env=server.env, stdout=log, stderr=log)
    try:
        _serve_and_stream(server, key)
    finally:
        stream.send_signal(signal.SIGTERM)
        stream.wait(timeout=30)
    result = sluice("slo", env=server.env)
    assert result.returncode == 0, result.stderr
    # 10 answers, 2 of them server errors: 20% bad against a 0.1% budget.
    assert _row(result.stdout, "ingest_availability") == [
        "ingest_availability",
        "ingest",
        "99.9%",
        "80.000%",
        "10",
        "-19900.0%",
        "200.00x",
        "200.00x",
    ]
    latency = _row(result.stdout, "ingest_ack_latency")
    assert latency[0] == "ingest_ack_latency (<= 0.25 s)" and latency[4] == "10"
    # The 7 accepted events were made visible by the stream worker, each well within 5 s.
    assert _row(result.stdout, "realtime_lag")[3:5] == ["100.000%", "7"]
    assert _row(result.stdout, "batch_freshness")[3:5] == ["-", "0"]
    assert _row(result.stdout, "query_latency")[3:5] == ["-", "0"]


def _serve_and_stream(server: Server, key: str) -> None:
    event = {"type": "track", "event": "Signed Up", "userId": "u1"}

    def send(write_key: str) -> int:
        return httpx.post(f"{server.url}/v1/track", json=event, auth=(write_key, "")).status_code

    assert [send(key) for _ in range(3)] == [200, 200, 200]
    assert send("not-a-key") == 401  # the client's error, not the API's
    keys_file = server.settings.api_keys_path
    saved = keys_file.read_bytes()
    keys_file.write_text("{ not json")
    assert [send(key) for _ in range(2)] == [503, 503]
    keys_file.write_bytes(saved)
    os.utime(keys_file, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert send(key) == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'sluice_slo_events{slo="ingest_availability"} 7.0' in metrics
    sli = re.search(r'sluice_slo_sli\{slo="ingest_availability"\} (\S+)', metrics)
    assert sli is not None and float(sli.group(1)) == pytest.approx(5 / 7)
    # The counts outlive the server: it writes the last ones when stopped.
    server.stop(signal.SIGTERM)
    server.start()
    assert [send(key) for _ in range(3)] == [200, 200, 200]
    server.stop(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        store = server.settings.realtime_store_path
        if store.exists() and read.counters(store).get(ADDED, 0) >= 7:
            return
        time.sleep(0.2)
    raise AssertionError("sluice stream did not make the 7 events visible within 30 s")


def test_slo_gauges_that_cannot_be_measured_leave_metrics_answering(make_settings, caplog) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(dt.date(2026, 11, 1))
    store = settings.realtime_store_path
    store.parent.mkdir(parents=True)
    store.write_text("not a database")
    now = [1_800_000_000.0]
    collector = SloCollector(settings, load_slos(), clock=lambda: now[0])
    assert list(collector.collect()) == []
    assert list(collector.collect()) == []
    # Logged once, naming what failed, not at every scrape.
    [record] = [r for r in caplog.records if "SLOs cannot be measured" in r.getMessage()]
    assert "DatabaseError" in record.getMessage()
    store.unlink()
    now[0] += COLLECT_CACHE_SECONDS
    names = {metric.name for metric in collector.collect()}
    assert names == {
        "sluice_slo_objective",
        "sluice_slo_sli",
        "sluice_slo_events",
        "sluice_slo_error_budget_remaining",
        "sluice_slo_burn_rate",
    }
