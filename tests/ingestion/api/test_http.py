"""The Tracking API over real HTTP: auth, gzip, limits, stamping, quarantine, rate limits."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import signal

import httpx
import orjson

from common.keys import KeyStore
from ingestion.api.messages import loader_reason
from ingestion.landing.helpers import parse_file
from tests.ingestion.api.conftest import Server, iso, landed_lines, segments


def track(user: str = "u1", **extra: object) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC)
    return {"userId": user, "event": "Signed Up", "timestamp": iso(now), **extra}


def test_basic_auth_and_body_key_are_accepted_and_the_source_is_the_key_name(
    server: Server, key: str
) -> None:
    by_header = httpx.post(f"{server.url}/v1/track", json=track(), auth=(key, ""))
    by_body = httpx.post(f"{server.url}/v1/identify", json={"userId": "u2", "writeKey": key})
    assert by_header.status_code == 200
    assert by_header.json() == {"success": True, "accepted": 1, "rejected": 0}
    assert by_body.json()["success"] is True
    lines = [json.loads(line) for line in landed_lines(server.settings)]
    assert [line["type"] for line in lines] == ["track", "identify"]
    assert all("writeKey" not in line for line in lines)
    assert {path.parent.name for path in segments(server.settings, ".jsonl.tmp")} == {"web"}
    log_lines = server.log_path.read_text().splitlines()
    access = [json.loads(line) for line in log_lines if line.startswith('{"method"')]
    assert [(a["path"], a["status"], a["source"], a["accepted"]) for a in access] == [
        ("/v1/track", 200, "web", 1),
        ("/v1/identify", 200, "web", 1),
    ]
    assert key not in server.log_path.read_text()
    assert "Signed Up" not in server.log_path.read_text()  # no payloads either


def test_missing_wrong_and_revoked_keys_get_401_and_nothing_is_stored(
    server: Server, key: str
) -> None:
    missing = httpx.post(f"{server.url}/v1/track", json=track())
    wrong = httpx.post(f"{server.url}/v1/track", json=track(), auth=("sk_wrong", ""))
    KeyStore(server.settings.api_keys_path).revoke("web")
    revoked = httpx.post(f"{server.url}/v1/track", json=track(), auth=(key, ""))
    assert [r.status_code for r in (missing, wrong, revoked)] == [401, 401, 401]
    assert "write key" in missing.json()["error"]
    assert landed_lines(server.settings) == []
    assert key not in server.settings.api_keys_path.read_text()
    assert key not in server.log_path.read_text()


def test_gzip_bodies_are_accepted(server: Server, key: str) -> None:
    body = gzip.compress(orjson.dumps({"batch": [track(type="track") for _ in range(50)]}))
    response = httpx.post(
        f"{server.url}/v1/batch",
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        auth=(key, ""),
    )
    assert response.json() == {"success": True, "accepted": 50, "rejected": 0}
    broken = httpx.post(
        f"{server.url}/v1/batch",
        content=body[:20],
        headers={"Content-Encoding": "gzip"},
        auth=(key, ""),
    )
    assert broken.status_code == 400
    assert "gzip" in broken.json()["error"]


def test_limits_answer_with_the_limit_they_hit(server: Server, key: str) -> None:
    big = track(properties={"blob": "x" * 33_000})
    too_big_message = httpx.post(f"{server.url}/v1/track", json=big, auth=(key, ""))
    in_batch = httpx.post(
        f"{server.url}/v1/batch", json={"batch": [track(type="track"), big]}, auth=(key, "")
    )
    small = track(type="track", properties={"blob": "x" * 20_000})
    too_big_request = httpx.post(
        f"{server.url}/v1/batch", json={"batch": [small] * 30}, auth=(key, "")
    )
    too_many = httpx.post(
        f"{server.url}/v1/batch", json={"batch": [{"type": "track"}] * 2501}, auth=(key, "")
    )
    malformed = httpx.post(f"{server.url}/v1/batch", content=b'{"batch": [', auth=(key, ""))
    assert too_big_message.status_code == 413
    assert "32 KB per message" in too_big_message.json()["error"]
    assert in_batch.status_code == 413
    assert "message 1" in in_batch.json()["error"]
    assert too_big_request.status_code == 413
    assert "500 KB per request" in too_big_request.json()["error"]
    assert too_many.status_code == 400
    assert "2500 per batch" in too_many.json()["error"]
    assert malformed.status_code == 400
    assert malformed.json()["error"].startswith("malformed JSON")
    assert landed_lines(server.settings) == []


def test_clock_skew_is_corrected_and_the_original_timestamp_kept(server: Server, key: str) -> None:
    # The client's clock is 1 hour fast: it says it sent the batch an hour from now.
    now = dt.datetime.now(dt.UTC)
    client_now = now + dt.timedelta(hours=1)
    happened = client_now - dt.timedelta(seconds=30)
    message = {"type": "track", "userId": "u1", "event": "Clicked", "timestamp": iso(happened)}
    response = httpx.post(
        f"{server.url}/v1/batch",
        json={"batch": [message], "sentAt": iso(client_now)},
        auth=(key, ""),
    )
    assert response.json()["accepted"] == 1
    (line,) = [json.loads(text) for text in landed_lines(server.settings)]
    received = dt.datetime.fromisoformat(line["receivedAt"])
    corrected = dt.datetime.fromisoformat(line["timestamp"])
    assert line["originalTimestamp"] == iso(happened)
    assert abs((received - corrected).total_seconds() - 30) < 0.01
    assert abs((received - now).total_seconds()) < 5


def test_missing_message_ids_are_generated_and_given_ones_kept(server: Server, key: str) -> None:
    batch = [track(type="track"), track(type="track", messageId="m-1"), track(type="track")]
    httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(key, ""))
    ids = [json.loads(text)["messageId"] for text in landed_lines(server.settings)]
    assert ids[1] == "m-1"
    assert ids[0].startswith("api-") and ids[2].startswith("api-") and ids[0] != ids[2]


def test_bad_messages_in_a_good_batch_are_quarantined_by_the_loader_with_the_api_reasons(
    server: Server, key: str
) -> None:
    future = iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    batch = [
        track(type="track", user="good"),
        {"type": "track", "event": "No User"},
        {"type": "teleport", "userId": "u1"},
        {"type": "identify", "userId": "u1", "traits": ["not", "an", "object"]},
        {"type": "track", "userId": "u1", "event": "Late", "timestamp": "yesterday"},
        {"type": "track", "userId": "u1", "event": "Future", "timestamp": future},
        "not a message",
        track(type="track", user="good too"),
    ]
    response = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(key, ""))
    body = response.json()
    assert response.status_code == 200
    assert (body["accepted"], body["rejected"]) == (2, 6)
    api_reasons = {error["index"]: error["reason"] for error in body["errors"]}
    assert api_reasons[1] == "missing userId and anonymousId (at least one is required)"
    assert api_reasons[5] == "timestamp more than 24 hours in the future"
    server.stop()  # closes the segment, as the loader needs
    (segment,) = segments(server.settings)
    source_file = segment.relative_to(server.settings.landing_dir).as_posix()
    parsed = parse_file(segment, source_file, dt.datetime.now(dt.UTC))
    loader_reasons = {
        line - 1: reason
        for line, reason in zip(
            parsed.rejected.column("_line_number").to_pylist(),
            parsed.rejected.column("reason").to_pylist(),
            strict=True,
        )
    }
    assert loader_reasons == {index: loader_reason(r) for index, r in api_reasons.items()}
    assert loader_reasons[5] == (
        'unknown type "rejected by the ingest API: timestamp more than 24 hours in the future"'
    )
    assert parsed.accepted.column("user_id").to_pylist() == ["good", "good too"]
    assert set(parsed.accepted.column("_source").to_pylist()) == {"web"}


def test_metrics_count_accepted_rejected_and_rate_limited(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(SLUICE_API_RATE="5", SLUICE_API_BURST="2500")
    key = server.create_key("app")
    batch = {"batch": [track(type="track")] * 2000 + [{"type": "nope", "userId": "x"}]}
    first = httpx.post(f"{server.url}/v1/batch", json=batch, auth=(key, ""))
    limited = httpx.post(f"{server.url}/v1/batch", json=batch, auth=(key, ""))
    assert first.status_code == 200
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert "SLUICE_API_RATE" in limited.json()["error"]
    text = httpx.get(f"{server.url}/metrics").text
    assert 'sluice_api_messages_accepted_total{source="app"} 2000' in text
    assert 'sluice_api_messages_rejected_total{reason="unknown type \\"...\\""} 1' in text
    assert 'sluice_api_requests_rate_limited_total{source="app"} 1' in text
    assert "sluice_api_fsync_duration_seconds_count 1" in text
    assert "sluice_api_request_duration_seconds_bucket" in text
    assert "sluice_api_segments_waiting 0" in text
    assert len(landed_lines(server.settings)) == 2001


def test_a_crash_leaves_no_open_segment_after_restart(server: Server, key: str) -> None:
    httpx.post(f"{server.url}/v1/track", json=track(), auth=(key, ""))
    (open_segment,) = segments(server.settings, ".jsonl.tmp")
    with open_segment.open("ab") as handle:
        handle.write(b'{"type": "track", "userId": "torn')  # a write cut by the crash
    server.stop(signal.SIGKILL)
    server.start()
    assert segments(server.settings, ".jsonl.tmp") == []
    (closed,) = segments(server.settings)
    assert [json.loads(line)["userId"] for line in closed.read_text().splitlines()] == ["u1"]
    text = httpx.get(f"{server.url}/metrics").text
    assert "sluice_api_segments_waiting 1" in text


def test_health_and_unknown_endpoints(server: Server, key: str) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    unknown = httpx.post(f"{server.url}/v1/teleport", json=track(), auth=(key, ""))
    assert unknown.status_code == 404
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'sluice_api_responses_total{path="/v1/other",status="404"} 1' in metrics
    assert "teleport" not in metrics


def test_every_rejection_reason_reads_as_itself_in_the_answer_and_the_metrics(
    server: Server, key: str
) -> None:
    future = iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    user = {"type": "identify", "userId": "u1"}
    cases = [
        ("not a message", "not a JSON object"),
        ({"userId": "u1"}, "missing field type"),
        ({"type": "teleport", "userId": "u1"}, 'unknown type "teleport"'),
        ({"type": "identify"}, "missing userId and anonymousId (at least one is required)"),
        ({**user, "messageId": "m" * 101}, "messageId longer than 100 characters"),
        ({"type": "track", "userId": "u1"}, "track message without event"),
        ({**user, "timestamp": "yesterday"}, 'timestamp "yesterday" is not an ISO-8601 timestamp'),
        ({**user, "sentAt": "soon"}, 'sentAt "soon" is not an ISO-8601 timestamp'),
        ({**user, "properties": [1]}, "properties is not an object"),
        ({**user, "traits": "plan"}, "traits is not an object"),
        ({**user, "context": 5}, "context is not an object"),
        ({**user, "timestamp": future}, "timestamp more than 24 hours in the future"),
    ]
    batch = [message for message, _ in cases]
    response = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(key, ""))
    assert response.json() == {
        "success": True,
        "accepted": 0,
        "rejected": len(cases),
        "errors": [{"index": i, "reason": reason} for i, (_, reason) in enumerate(cases)],
    }
    single = httpx.post(f"{server.url}/v1/track", json={"userId": "u1"}, auth=(key, ""))
    assert single.json()["errors"] == [{"index": 0, "reason": "track message without event"}]
    metrics = httpx.get(f"{server.url}/metrics").text
    label = (
        'sluice_api_messages_rejected_total{reason="timestamp more than 24 hours in the future"}'
    )
    assert f"{label} 1" in metrics
    server.stop()
    (segment,) = segments(server.settings)
    source_file = segment.relative_to(server.settings.landing_dir).as_posix()
    parsed = parse_file(segment, source_file, dt.datetime.now(dt.UTC))
    expected = [loader_reason(reason) for _, reason in cases] + ["track message without event"]
    assert parsed.rejected.column("reason").to_pylist() == expected
