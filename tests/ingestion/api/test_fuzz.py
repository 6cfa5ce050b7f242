"""Fuzz the live server with odd bodies and headers: no 5xx, it stays up, nothing good is lost."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.landing import parse_file
from tests.ingestion.api.conftest import Server, segments
from tests.ingestion.api.strategies import good_messages, json_values, messages

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
