"""``/metrics`` of ``sluice serve`` keeps its names, types, help and labels: dashboards and
alerts are written against them. Recorded from a running server, every family touched once."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import signal
from pathlib import Path

import httpx

from common.keys import KeyStore
from tests.ingestion.api.conftest import Server, free_port

LATENCY = ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0")
LATENCY_LE = (*LATENCY, "2.5", "+Inf")
FSYNC_LE = ("0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05")
FSYNC_LE += ("0.1", "+Inf")
QUERY_LE = (*LATENCY, "2.5", "5.0", "10.0", "+Inf")
DASHBOARD_LE = ("0.1", "0.25", "0.5", "1.0", "2.0", "3.0", "5.0", "10.0", "30.0", "+Inf")


def histogram(name: str, les: tuple[str, ...]) -> set[str]:
    return {*(f"{name}_bucket{{le={le}}}" for le in les), f"{name}_sum", f"{name}_count"}


# family -> (type, help, the series' names with their label names; bucket bounds written out)
RECORDED: dict[str, tuple[str, str, set[str]]] = {
    "sluice_api_messages_accepted_total": (
        "counter",
        "Messages appended to landing that meet the event contract, by source.",
        {"sluice_api_messages_accepted_total{source}"},
    ),
    "sluice_api_messages_rejected_total": (
        "counter",
        "Messages appended to landing for quarantine (raw.rejected_events), by reason.",
        {"sluice_api_messages_rejected_total{reason}"},
    ),
    "sluice_api_requests_rate_limited_total": (
        "counter",
        "Requests answered 429 because the write key's token bucket was empty, by source.",
        {"sluice_api_requests_rate_limited_total{source}"},
    ),
    "sluice_api_responses_total": (
        "counter",
        "Responses by path and status code.",
        {"sluice_api_responses_total{path,status}"},
    ),
    "sluice_api_request_bytes_total": (
        "counter",
        "Request body bytes received.",
        {"sluice_api_request_bytes_total"},
    ),
    "sluice_api_request_duration_seconds": (
        "histogram",
        "Time from request to response.",
        histogram("sluice_api_request_duration_seconds", LATENCY_LE),
    ),
    "sluice_api_fsync_duration_seconds": (
        "histogram",
        "Time to write and fsync one commit group.",
        histogram("sluice_api_fsync_duration_seconds", FSYNC_LE),
    ),
    "sluice_api_segments_open": (
        "gauge",
        "Landing segments being written.",
        {"sluice_api_segments_open"},
    ),
    "sluice_api_segments_waiting": (
        "gauge",
        "Closed landing segments of the API that the load has not picked up yet.",
        {"sluice_api_segments_waiting"},
    ),
    "sluice_query_duration_seconds": (
        "histogram",
        "Time to answer a report or query request (cache hits included).",
        histogram("sluice_query_duration_seconds", QUERY_LE),
    ),
    "sluice_query_cache_requests_total": (
        "counter",
        "Report and query lookups in the cache.",
        {
            "sluice_query_cache_requests_total{result=hit}",
            "sluice_query_cache_requests_total{result=miss}",
        },
    ),
    "sluice_query_cache_hit_ratio": (
        "gauge",
        "Hits / lookups since the server started.",
        {"sluice_query_cache_hit_ratio"},
    ),
    "sluice_query_refusals_total": (
        "counter",
        "Requests refused, by the limit they hit.",
        {"sluice_query_refusals_total{limit}"},
    ),
    "sluice_serving_snapshot_age_seconds": (
        "gauge",
        "Seconds since the snapshot was built.",
        {"sluice_serving_snapshot_age_seconds"},
    ),
    # GET /v1/live's own figures (the real-time store's appear once sluice stream wrote it).
    "sluice_live_duration_seconds": (
        "histogram",
        "Time to answer a /v1/live request.",
        histogram("sluice_live_duration_seconds", LATENCY_LE),
    ),
    "sluice_live_refusals_total": (
        "counter",
        "/v1/live requests refused, by the limit they hit (read_key, parameters, store).",
        set(),
    ),
    # The SLOs of ops/slos.yml (sluice/slo.py); sluice_slo_batch_fresh appears once a mart is
    # built.
    "sluice_slo_objective": (
        "gauge",
        "Each SLO's objective (ops/slos.yml).",
        {"sluice_slo_objective{slo}"},
    ),
    "sluice_slo_sli": (
        "gauge",
        "Each SLO's good share over its window (absent without events).",
        {"sluice_slo_sli{slo}"},
    ),
    "sluice_slo_events": (
        "gauge",
        "Events each SLO counted over its window.",
        {"sluice_slo_events{slo}"},
    ),
    "sluice_slo_error_budget_remaining": (
        "gauge",
        "Share of each SLO's error budget left over its window (negative once overspent).",
        {"sluice_slo_error_budget_remaining{slo}"},
    ),
    "sluice_slo_burn_rate": (
        "gauge",
        "Bad share over the last window / the SLO's budget share (absent without events).",
        {"sluice_slo_burn_rate{slo,window}"},
    ),
    # What the Dagster instance and the data directory say (sluice/monitoring.py): no run,
    # no asset yet here; the storage areas are there from the start.
    "sluice_dagster_instance_up": (
        "gauge",
        "1 if the Dagster instance was read at the last look (or has no runs yet), 0 if it "
        "could not be (the sluice_etl_* and sluice_asset_* figures are older).",
        {"sluice_dagster_instance_up"},
    ),
    "sluice_etl_last_run_success": (
        "gauge",
        "1 if the job's last finished Dagster run succeeded, 0 if it failed or was canceled.",
        set(),
    ),
    "sluice_etl_last_run_duration_seconds": (
        "gauge",
        "Start to end of the job's last finished Dagster run.",
        set(),
    ),
    "sluice_etl_last_run_end_timestamp_seconds": (
        "gauge",
        "When the job's last finished Dagster run ended (Unix time).",
        set(),
    ),
    "sluice_etl_runs": (
        "gauge",
        "Dagster runs the instance holds, by status (delta() over a window: runs ended).",
        set(),
    ),
    "sluice_asset_last_materialization_timestamp_seconds": (
        "gauge",
        "When the asset was last materialized (Unix time), for assets with a freshness policy.",
        set(),
    ),
    "sluice_asset_age_seconds": (
        "gauge",
        "Seconds since the asset was last materialized, for assets with a freshness policy.",
        set(),
    ),
    "sluice_asset_freshness_state": (
        "gauge",
        "1 for the asset's freshness state against its policy (PASS, WARN, FAIL, UNKNOWN "
        "before any materialization), 0 for the others.",
        set(),
    ),
    "sluice_load_rows": (
        "gauge",
        "Rows the last load wrote: loaded to raw.events, rejected to raw.rejected_events.",
        set(),
    ),
    "sluice_storage_bytes": (
        "gauge",
        "Bytes of each area of the data directory (files and write-ahead logs).",
        {"sluice_storage_bytes{area}"},
    ),
    "sluice_landing_waiting_files": (
        "gauge",
        "Closed landing files (API segments and dropped files) no load has taken yet.",
        {"sluice_landing_waiting_files"},
    ),
    "sluice_landing_oldest_waiting_seconds": (
        "gauge",
        "Seconds since the oldest landing file waiting for the load was closed (0: none).",
        {"sluice_landing_oldest_waiting_seconds"},
    ),
    "sluice_dashboard_load_seconds": (
        "histogram",
        "Time from opening the dashboard to its first reports drawn, as its page reports.",
        histogram("sluice_dashboard_load_seconds", DASHBOARD_LE),
    ),
}

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Label values that name a fixed set, written out; the others vary with the traffic.
FIXED_VALUES = {"le", "result"}


def parse(text: str) -> tuple[dict[str, tuple[str, str, set[str]]], dict[str, float]]:
    """The families (type, help, series shapes) and each series' value."""
    families: dict[str, tuple[str, str, set[str]]] = {}
    values: dict[str, float] = {}
    helps: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            current, _, kind = line[len("# TYPE ") :].partition(" ")
            families[current] = (kind, helps[current], set())
        elif line:
            match = _SAMPLE.match(line)
            assert match, line
            name, labels_text, value = match.groups()
            labels = _LABEL.findall(labels_text or "")
            shape = ",".join(k + (f"={v}" if k in FIXED_VALUES else "") for k, v in labels)
            families[current][2].add(f"{name}{{{shape}}}" if labels else name)
            values[f"{name}{{{labels_text}}}" if labels_text else name] = float(value)
    return families, values


def test_metrics_keep_their_names_types_help_and_labels(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        dt.date.today() - dt.timedelta(days=1), SLUICE_API_RATE="5", SLUICE_API_BURST="2500"
    )
    env = {**os.environ, **settings.subprocess_env()}
    server = Server(settings, free_port(), env, tmp_path / "serve.log")
    store = KeyStore(settings.api_keys_path)
    write_key, read_key = store.create("app"), store.create("reader", kind="read")
    server.start()
    try:
        url = server.url
        event = {"type": "track", "event": "Signed Up", "userId": "u1"}
        assert httpx.post(f"{url}/v1/track", json=event, auth=(write_key, "")).status_code == 200
        odd = {"type": "nope", "userId": "u1"}
        assert httpx.post(f"{url}/v1/batch", json={"batch": [odd]}, auth=(write_key, "")).is_success
        # The write key's bucket holds 2500 messages; these are more than the 2499 left.
        many = {"batch": [event] * 2500}
        limited = httpx.post(f"{url}/v1/batch", json=many, auth=(write_key, ""))
        assert limited.status_code == 429
        bearer = {"Authorization": f"Bearer {read_key}"}
        # No snapshot is published: the query is refused, and still timed.
        assert (
            httpx.post(f"{url}/v1/query", json={"sql": "select 1"}, headers=bearer).status_code
            == 503
        )
        answer = httpx.get(f"{url}/metrics")
    finally:
        server.stop(signal.SIGKILL)
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    families, values = parse(answer.text)
    assert families == RECORDED
    assert values['sluice_api_messages_accepted_total{source="app"}'] == 1
    assert values['sluice_api_messages_rejected_total{reason="unknown type \\"...\\""}'] == 1
    assert values['sluice_api_requests_rate_limited_total{source="app"}'] == 1
    assert values['sluice_api_responses_total{path="/v1/track",status="200"}'] == 1
    assert values['sluice_api_responses_total{path="/v1/batch",status="429"}'] == 1
    assert values["sluice_api_request_duration_seconds_count"] == 3
    assert values["sluice_query_duration_seconds_count"] == 1
    assert values['sluice_query_refusals_total{limit="snapshot"}'] == 1
    # Four ingest requests, none a server error; the query's 503 is timed, not an ingest answer.
    assert values['sluice_slo_events{slo="ingest_availability"}'] == 3
    assert values['sluice_slo_sli{slo="ingest_availability"}'] == 1
    assert values['sluice_slo_events{slo="query_latency"}'] == 1
    assert values["sluice_api_segments_open"] == 1
    assert values["sluice_api_segments_waiting"] == 0
    assert math.isnan(values["sluice_serving_snapshot_age_seconds"])
