"""The landing sensor sees the API's segments once they are closed, not while open."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import httpx

from orchestration.definitions import build_definitions
from orchestration.prepare import prepare
from tests.ingestion.api.conftest import Server


def test_landing_sensor_starts_a_load_when_an_api_segment_closes(server: Server, key: str) -> None:
    prepare(server.settings)
    sensor = build_definitions(server.settings).resolve_sensor_def("landing_files_sensor")
    message = {"userId": "u1", "event": "Clicked", "timestamp": dt.datetime.now(dt.UTC).isoformat()}
    assert httpx.post(f"{server.url}/v1/track", json=message, auth=(key, "")).status_code == 200
    with dg.instance_for_test() as instance:
        while_open = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert not while_open.run_requests
        server.stop()  # closes the segment
        closed = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert len(closed.run_requests) == 1
