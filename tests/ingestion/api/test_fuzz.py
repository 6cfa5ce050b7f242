"""Fuzz the live server with odd bodies, headers and text: no 5xx, it stays up, nothing good is
lost, and one connection carries every answer."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.landing.helpers import parse_file
from tests.ingestion.api.conftest import Server, client_port, segments
from tests.ingestion.api.strategies import good_messages, json_values, messages, odd_messages

ENDPOINTS = ["batch", "import", "track", "identify", "page", "screen", "group", "alias", "x"]
# Header values: printable ASCII without surrounding blanks (HTTP clients refuse others).
ascii_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


def dumps(value: Any) -> bytes:
    # The standard library writes integers beyond 64 bits, which JSON allows.
    return json.dumps(value).encode()


@st.composite
def requests(draw: st.DrawFn, key: str) -> tuple[str, bytes, dict[str, str], list[str]]:
    """(endpoint, body, headers, messageIds of good messages in it)."""
    endpoint = draw(st.sampled_from(ENDPOINTS))
    good: list[dict[str, Any]] = []
    shape = draw(st.sampled_from(["batch", "single", "json", "bytes"]))
    if shape == "batch":
        good = draw(st.lists(good_messages(), max_size=5))
        items = good + draw(st.lists(messages(), max_size=5))
        items = draw(st.permutations(items))
        envelope: dict[str, Any] = {"batch": items}
        if draw(st.booleans()):
            envelope["sentAt"] = dt.datetime.now(dt.UTC).isoformat()
        body = dumps(envelope)
    elif shape == "single":
        body = dumps(draw(st.one_of(messages(), good_messages())))
    elif shape == "json":
        body = dumps(draw(json_values))
    else:
        body = draw(st.binary(max_size=300))
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", ""]))}
    auth = draw(st.sampled_from(["basic", "basic", "none", "junk", "bearer"]))
    if auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    elif auth in ("junk", "bearer"):
        headers["Authorization"] = ("Bearer " if auth == "bearer" else "") + draw(ascii_text)
    encoding = draw(st.sampled_from(["", "gzip", "gzip", "identity", "br", "gzip-lie"]))
    if encoding == "gzip":
        body = gzip.compress(body)
    if encoding:
        headers["Content-Encoding"] = "gzip" if encoding == "gzip-lie" else encoding
    is_batch = endpoint in ("batch", "import") and shape == "batch"
    ids = [str(m["messageId"]) for m in good] if is_batch and auth == "basic" else []
    return endpoint, body, headers, ids if encoding in ("", "gzip", "identity") else []


def test_fuzzed_requests_never_get_5xx_and_lose_no_good_message(server: Server, key: str) -> None:
    acknowledged: list[str] = []
    statuses: list[int] = []

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(request=requests(key))
    def post(request: tuple[str, bytes, dict[str, str], list[str]]) -> None:
        endpoint, body, headers, ids = request
        response = httpx.post(f"{server.url}/v1/{endpoint}", content=body, headers=headers)
        statuses.append(response.status_code)
        assert response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/json")
        if response.status_code == 200:
            answer = response.json()
            assert answer["success"] is True
            acknowledged.extend(ids)
        elif ids:
            assert response.status_code in (400, 413), response.text

    post()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert server.process is not None and server.process.poll() is None
    assert 200 in statuses and 401 in statuses
    server.stop()
    loaded: set[str] = set()
    for path in segments(server.settings):
        name = path.relative_to(server.settings.landing_dir).as_posix()
        parsed = parse_file(path, name, dt.datetime.now(dt.UTC))
        loaded.update(parsed.accepted.column("message_id").to_pylist())
    assert set(acknowledged) <= loaded


@st.composite
def odd_text_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str], int, list[str]]:
    """(endpoint, body, headers, the status it must get, messageIds that must land on 200):
    batches and single messages with text that JSON allows and Unicode does not."""
    endpoint = draw(st.sampled_from(["batch", "import", "track", "identify", "page"]))
    single = endpoint not in ("batch", "import")
    odd = draw(st.lists(odd_messages(), min_size=1, max_size=1 if single else 4))
    lands = [m.message_id for m in odd if m.lands(single)]
    if single:
        body = odd[0].line
    else:
        good = draw(st.lists(good_messages(), max_size=4))
        lands += [str(m["messageId"]) for m in good]
        items = draw(st.permutations([m.line for m in odd] + [dumps(m) for m in good]))
        body = b'{"batch": [' + b", ".join(items) + b"]}"
    too_long = draw(st.integers(0, 9)) == 0
    if too_long:  # a string of 33 KB: the message is over the limit
        blob = b'"' + b"x" * 33_000 + b'"'
        body = (
            body[:-1] + b', "blob": ' + blob + b"}"
            if single
            else body[:-2] + b', {"b": ' + blob + b"}]}"
        )
    if single and too_long:
        status = 413  # the body's size is checked before it is parsed
    elif any(m.malformed for m in odd):
        status = 400
    else:
        status = 413 if too_long else 200
    headers = {"Content-Type": "application/json"}
    if draw(st.booleans()):
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return endpoint, body, headers, status, lands


def test_text_that_is_not_valid_unicode_gets_no_5xx_and_good_messages_land(
    server: Server, key: str
) -> None:
    answered = {"accepted": 0, "rejected": 0}
    must_land: list[str] = []
    ports: set[int] = set()
    statuses: list[int] = []

    with httpx.Client(auth=(key, ""), limits=httpx.Limits(max_connections=1)) as http:

        @settings(
            max_examples=100,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(request=odd_text_requests())
        def post(request: tuple[str, bytes, dict[str, str], int, list[str]]) -> None:
            endpoint, body, headers, status, lands = request
            response = http.post(f"{server.url}/v1/{endpoint}", content=body, headers=headers)
            ports.add(client_port(response))
            statuses.append(response.status_code)
            assert response.status_code == status, response.text
            if status == 200:
                answer = response.json()
                answered["accepted"] += answer["accepted"]
                answered["rejected"] += answer["rejected"]
                must_land.extend(lands)

        post()
    assert len(ports) == 1, "the server closed the connection"
    assert {200, 400, 413} <= set(statuses)
    server.stop()
    accepted: set[str] = set()
    loader = {"accepted": 0, "rejected": 0}
    for path in segments(server.settings):
        name = path.relative_to(server.settings.landing_dir).as_posix()
        parsed = parse_file(path, name, dt.datetime.now(dt.UTC))
        accepted.update(parsed.accepted.column("message_id").to_pylist())
        loader["accepted"] += parsed.accepted.num_rows
        loader["rejected"] += parsed.rejected.num_rows
        # The API writes only JSON the loader can read, whatever it was sent.
        assert "malformed JSON" not in parsed.rejected.column("reason").to_pylist()
    assert set(must_land) <= accepted
    assert loader == answered
