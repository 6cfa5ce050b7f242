"""What an operator watches, on a real ``sluice serve`` over a data directory with real Dagster
runs (an ``elt`` run that succeeded, a ``publish`` run that failed) and real traffic: every
figure on ``/metrics`` equals what the Dagster instance, the warehouse and the files say;
``GET /v1/monitoring`` answers the same, and the dashboard's monitoring panel draws it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest

from common.keys import KeyStore
from common.settings import Settings
from ingestion.landing.helpers import new_landing_files
from ingestion.pipeline import PIPELINE_NAME
from orchestration.definitions import PUBLISH_JOB
from sluice.runs import run_job
from tests.conftest import built_data_dir
from tests.ingestion.api.conftest import Server, free_port
from tests.sluice.test_metrics import parse

LAST = dt.date.today() - dt.timedelta(days=1)
SLUICE = str(Path(sys.executable).with_name("sluice"))
EVENTS = 10


@dataclass
class Monitored:
    settings: Settings
    server: Server
    read_key: str
    started: float
    metrics: dict[str, float]


def _get(url: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    with built_data_dir(tmp_path_factory, "monitoring", LAST, 2, 150, 11) as settings:
        # A publish run that fails: the warehouse it copies from is not there.
        moved = settings.warehouse_path.with_name("away.duckdb")
        settings.warehouse_path.rename(moved)
        try:
            assert not run_job(settings, PUBLISH_JOB).success
        finally:
            settings.warehouse_path.unlink(missing_ok=True)
            moved.rename(settings.warehouse_path)

        # A file dropped in the landing area two minutes ago, which no load has taken yet.
        dropped = settings.landing_dir / "dropped" / "events-dropped.jsonl"
        dropped.parent.mkdir()
        dropped.write_text('{"type": "track", "event": "Signed Up", "userId": "d1"}\n')
        os.utime(dropped, (time.time() - 120, time.time() - 120))

        env = {**os.environ, **settings.subprocess_env()}
        log = settings.data_dir.parent / "serve.log"
        server = Server(settings, free_port(), env, log)
        keys = KeyStore(settings.api_keys_path)
        write_key, read_key = keys.create("app"), keys.create("ops", kind="read")
        started = time.time()
        server.start()
        try:
            now = dt.datetime.now(dt.UTC).isoformat()
            batch = [
                {"type": "track", "event": "Feature Used", "userId": f"u{n}", "timestamp": now}
                for n in range(EVENTS)
            ]
            batch.append({"type": "nope", "userId": "u1"})
            with httpx.Client(base_url=server.url, timeout=30) as client:
                answer = client.post("/v1/batch", json={"batch": batch}, auth=(write_key, ""))
                assert answer.status_code == 200, answer.text
                assert client.post("/v1/batch", json={"batch": batch}).status_code == 401
                bearer = {"Authorization": f"Bearer {read_key}"}
                for _ in range(2):  # a miss, then a hit
                    report = client.get(f"/v1/reports/daily_summary?end={LAST}", headers=bearer)
                    assert report.status_code == 200, report.text
                beacon = client.post(
                    "/v1/monitoring/dashboard-load", json={"seconds": 1.5}, headers=bearer
                )
                assert beacon.status_code == 200, beacon.text
                refused = client.post(
                    "/v1/monitoring/dashboard-load", json={"seconds": -1}, headers=bearer
                )
                assert refused.status_code == 400 and "seconds" in refused.json()["error"]
            subprocess.run([SLUICE, "stream", "--once"], env=env, check=True, timeout=60)
            _, metrics = parse(_get(f"{server.url}/metrics").text)
            yield Monitored(settings, server, read_key, started, metrics)
        finally:
            server.stop(signal.SIGKILL)


def _bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def test_metrics_say_what_the_instance_the_warehouse_and_the_files_say(
    monitored: Monitored,
) -> None:
    settings, metrics = monitored.settings, monitored.metrics
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = {r.dagster_run.job_name: r for r in instance.get_run_records()}
        dau = instance.get_latest_materialization_event(dg.AssetKey(["marts", "dau"]))
        snapshot = instance.get_latest_materialization_event(dg.AssetKey(["serving", "snapshot"]))
        assert dau is not None and snapshot is not None and snapshot.asset_materialization
    elt, publish = runs["elt"], runs["publish"]
    assert elt.start_time is not None and elt.end_time is not None

    # ETL run outcome and duration (Stage 2).
    assert metrics['sluice_etl_last_run_success{job="elt"}'] == 1
    assert metrics['sluice_etl_last_run_success{job="publish"}'] == 0
    duration = metrics['sluice_etl_last_run_duration_seconds{job="elt"}']
    assert duration > 0 and duration == pytest.approx(elt.end_time - elt.start_time)
    assert metrics['sluice_etl_last_run_end_timestamp_seconds{job="publish"}'] == (
        pytest.approx(publish.end_time)
    )
    assert metrics['sluice_etl_runs{status="SUCCESS"}'] == 1
    assert metrics['sluice_etl_runs{status="FAILURE"}'] == 1

    # ETL freshness (Stage 3): the marts and raw/events, built minutes ago.
    stamp = metrics['sluice_asset_last_materialization_timestamp_seconds{asset="marts/dau"}']
    assert stamp == pytest.approx(dau.timestamp)
    assert 0 <= metrics['sluice_asset_age_seconds{asset="marts/dau"}'] < 900
    for asset in ("marts/dau", "marts/revenue_daily", "raw/events"):
        assert metrics[f'sluice_asset_freshness_state{{asset="{asset}",state="PASS"}}'] == 1
        assert metrics[f'sluice_asset_freshness_state{{asset="{asset}",state="FAIL"}}'] == 0
    assert not any("core/fct_events" in name for name in metrics)  # no policy, no series

    # The last load's rows (failed ingest at the load: quarantined rows).
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        loaded = con.execute("select count(*) from raw.events").fetchone()
        rejected = con.execute("select count(*) from raw.rejected_events").fetchone()
    assert loaded and rejected and rejected[0] > 0
    assert metrics['sluice_load_rows{result="loaded"}'] == loaded[0]
    assert metrics['sluice_load_rows{result="rejected"}'] == rejected[0]

    # Storage (Stages 1, 2): sizes of the files, the warehouse never opened by the server.
    assert metrics['sluice_storage_bytes{area="warehouse"}'] == (
        settings.warehouse_path.stat().st_size
    )
    assert metrics['sluice_storage_bytes{area="serving_snapshot"}'] == (
        settings.serving_path.stat().st_size
    )
    assert metrics['sluice_storage_bytes{area="landing"}'] == _bytes(settings.landing_dir)
    realtime = _bytes(settings.realtime_store_path.parent)
    assert metrics['sluice_storage_bytes{area="realtime"}'] == realtime > 0
    assert metrics['sluice_storage_bytes{area="dagster"}'] > 0
    # The Dagster UI has the warehouse's size on each snapshot (nothing wrote to it since).
    recorded = snapshot.asset_materialization.metadata["warehouse_bytes"].value
    assert recorded == settings.warehouse_path.stat().st_size

    # Ingest latency (Stage 3) to the warehouse: what waits for the next load, since when.
    waiting = new_landing_files(settings.landing_dir, settings.dlt_dir, PIPELINE_NAME)
    assert waiting == ["dropped/events-dropped.jsonl"]
    assert metrics["sluice_landing_waiting_files"] == 1
    assert 120 <= metrics["sluice_landing_oldest_waiting_seconds"] < 300

    # Ingest rate and failed ingest (Stage 1), ingest latency (Stage 3).
    assert metrics['sluice_api_messages_accepted_total{source="app"}'] == EVENTS
    assert metrics['sluice_api_messages_rejected_total{reason="unknown type \\"...\\""}'] == 1
    assert metrics['sluice_api_responses_total{path="/v1/batch",status="401"}'] == 1
    assert metrics["sluice_api_request_duration_seconds_count"] == 2
    # Query latency and cache hit ratio (Stages 1, 2), real-time lag and dashboard (Stage 3).
    assert metrics["sluice_query_duration_seconds_count"] == 2
    assert metrics["sluice_query_cache_hit_ratio"] == 0.5
    assert metrics['sluice_realtime_recent_lag_seconds{quantile="0.95"}'] > 0
    assert metrics["sluice_dashboard_load_seconds_count"] >= 1
    assert metrics['sluice_dashboard_load_seconds_bucket{le="1.0"}'] == 0
    assert metrics['sluice_dashboard_load_seconds_bucket{le="2.0"}'] >= 1


def test_the_monitoring_route_answers_the_same_figures_for_read_keys(
    monitored: Monitored,
) -> None:
    url = f"{monitored.server.url}/v1/monitoring"
    assert _get(url).status_code == 401
    answer = _get(url, monitored.read_key)
    assert answer.status_code == 200, answer.text
    body, metrics = answer.json(), monitored.metrics
    assert body["runs"]["last"]["job"] == "publish"
    assert body["runs"]["last"]["status"] == "FAILURE"
    elt = next(run for run in body["runs"]["jobs"] if run["job"] == "elt")
    assert elt["status"] == "SUCCESS"
    assert elt["duration_seconds"] == round(
        metrics['sluice_etl_last_run_duration_seconds{job="elt"}'], 3
    )
    assert body["runs"]["by_status"] == {"SUCCESS": 1, "FAILURE": 1}
    states = {row["asset"]: row["state"] for row in body["freshness"]}
    assert states["marts/dau"] == "PASS" and states["raw/events"] == "PASS"
    assert len(states) == 7  # raw/events and the six marts
    assert body["storage_bytes"] == {
        area: metrics[f'sluice_storage_bytes{{area="{area}"}}'] for area in body["storage_bytes"]
    }
    ingest = body["ingest"]
    assert (ingest["accepted"], ingest["rejected"], ingest["failed_requests"]) == (EVENTS, 1, 1)
    # Over the server's life so far (under a minute): 10 messages in that many seconds.
    lifetime = time.time() - monitored.started
    assert EVENTS / lifetime <= ingest["messages_per_second"] <= EVENTS / 0.1
    assert ingest["last_load_rows"]["loaded"] == metrics['sluice_load_rows{result="loaded"}']
    assert body["query"]["cache_hit_ratio"] == 0.5 and body["query"]["requests"] == 2
    assert body["query"]["p95_seconds"] > 0
    # sluice stream --once has just run: its heartbeat is fresh for a while.
    assert isinstance(body["realtime"]["worker_up"], bool)
    assert body["realtime"]["lag_p95_seconds"] == round(
        metrics['sluice_realtime_recent_lag_seconds{quantile="0.95"}'], 4
    )
    # One load of 1.5 s in the bucket (1, 2]: p95 interpolated as histogram_quantile does.
    assert body["dashboard"] == {"loads": 1, "load_p95_seconds": 1.95}


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not os.environ.get("CI"),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)
def test_the_dashboard_panel_draws_the_figures_and_reports_its_own_load_time(
    monitored: Monitored, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.serving.query_api.test_dashboard import _browser

    server, settings = monitored.server, monitored.settings
    before = parse(_get(f"{server.url}/metrics").text)[1]
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = _browser(playwright, tmp_path)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{server.url}/dashboard")
            page.fill("#key", monitored.read_key)
            page.click("#key-form button")
            panel = page.locator("#monitoring")
            # The last run failed: the panel says so, and where to look.
            expect(panel).to_have_attribute("data-state", "failing", timeout=20_000)
            expect(page.locator("#mon-status")).to_contain_text("the last publish run ended")
            expect(page.locator("#mon-run")).to_have_text("FAILURE")
            # The page's own report requests count too: the same ratio as the route's.
            expect(page.locator("body")).to_have_attribute("data-state", "ready")
            ratio = _get(f"{server.url}/v1/monitoring", monitored.read_key).json()["query"]
            expect(page.locator("#mon-cache")).to_have_text(
                f"{ratio['cache_hit_ratio']:.1%}", timeout=20_000
            )
            expect(page.locator("#mon-failed")).to_have_text("1 / 1")
            expect(page.locator("#mon-backlog")).to_have_text("1")
            expect(page.locator("#mon-backlog-detail")).to_contain_text("the oldest for 2 min")
            rows = page.locator("#mon-freshness tr")
            expect(rows).to_have_count(7)
            dau = page.locator("#mon-freshness tr[data-asset='marts/dau']")
            expect(dau).to_have_attribute("data-state", "PASS")
            warehouse = page.locator("#mon-storage tr[data-area=warehouse]")
            size = settings.warehouse_path.stat().st_size
            expect(warehouse).to_have_attribute("data-bytes", str(size))
            page.screenshot(path=str(tmp_path / "monitoring.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    # The page posted its own load time once: one more observation, of a plausible time.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        after = parse(_get(f"{server.url}/metrics").text)[1]
        if (
            after["sluice_dashboard_load_seconds_count"]
            > before["sluice_dashboard_load_seconds_count"]
        ):
            break
        time.sleep(0.5)
    count = "sluice_dashboard_load_seconds_count"
    assert after[count] == before[count] + 1
    seconds = (
        after["sluice_dashboard_load_seconds_sum"] - before["sluice_dashboard_load_seconds_sum"]
    )
    assert 0 < seconds < 20


def test_an_unreadable_instance_leaves_the_last_figures_and_says_so(
    monitored: Monitored, tmp_path: Path
) -> None:
    """The collector in this process over a copy of the data directory's Dagster home, whose
    configuration then breaks: /metrics still answers, with the figures read before."""
    from prometheus_client import CollectorRegistry, generate_latest

    from common.settings import load_settings
    from sluice.monitoring import CACHE_SECONDS, MonitoringCollector

    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path / "data")})
    shutil.copytree(monitored.settings.dagster_home, settings.dagster_home)
    config = settings.dagster_home / "dagster.yaml"
    now = [time.time()]
    registry = CollectorRegistry()
    registry.register(MonitoringCollector(settings, clock=lambda: now[0]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(settings.dagster_home))
        _, before = parse(generate_latest(registry).decode())
        assert before["sluice_dagster_instance_up"] == 1
        assert before['sluice_etl_last_run_success{job="elt"}'] == 1
        config.write_text("run_storage: [not, a, mapping\n")
        now[0] += CACHE_SECONDS
        _, after = parse(generate_latest(registry).decode())
    assert after["sluice_dagster_instance_up"] == 0
    assert after['sluice_etl_last_run_success{job="elt"}'] == 1
    assert after['sluice_storage_bytes{area="dagster"}'] > 0
