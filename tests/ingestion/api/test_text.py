"""Text that JSON allows and Unicode does not, over real HTTP: lone UTF-16 surrogates, bytes
that are not UTF-8, NUL. Such text becomes U+FFFD as the loader reads it, the message is
answered like any other, the batch's other messages land, and the connection stays open."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx

from ingestion.landing.helpers import parse_file
from tests.ingestion.api.conftest import Server, client_port, iso, landed_lines, segments


def loaded(server: Server) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The loader's accepted and rejected rows of the server's segments (stops the server)."""
    server.stop()
    (segment,) = segments(server.settings)
    name = segment.relative_to(server.settings.landing_dir).as_posix()
    parsed = parse_file(segment, name, dt.datetime.now(dt.UTC))
    return parsed.accepted.to_pylist(), parsed.rejected.to_pylist()


def test_lone_surrogates_become_u_fffd_and_the_rest_of_the_batch_lands(
    server: Server, key: str
) -> None:
    now = iso(dt.datetime.now(dt.UTC))
    good = json.dumps({"type": "track", "userId": "good", "event": "Clicked", "timestamp": now})
    # As JSON text: the escapes reach the server as they are written here.
    odd = (
        r'{"type": "track", "userId": "u\ud800", "event": "Caf\udc00", "timestamp": "NOW",'
        r' "properties": {"k\ud83d": "\ud83d\ude00 ok", "path": "C:\\ud800"}}'
    ).replace("NOW", now)
    unknown = r'{"type": "\ud800", "userId": "u1"}'
    body = f'{{"batch": [{good}, {odd}, {unknown}]}}'.encode()
    with httpx.Client(auth=(key, "")) as http:
        response = http.post(f"{server.url}/v1/batch", content=body)
        single = http.post(f"{server.url}/v1/track", content=odd.encode())
        after = http.post(f"{server.url}/v1/identify", json={"userId": "next"})
        ports = {client_port(r) for r in (response, single, after)}
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "accepted": 2,
        "rejected": 1,
        "errors": [{"index": 2, "reason": 'unknown type "\ufffd"'}],
    }
    assert single.json() == {"success": True, "accepted": 1, "rejected": 0}
    assert after.status_code == 200
    assert len(ports) == 1, "the server closed the connection"
    landed = [json.loads(line) for line in landed_lines(server.settings)]
    assert landed[1]["userId"] == "u\ufffd" and landed[1]["event"] == "Caf\ufffd"
    # A proper pair stays the emoji; an escaped backslash before "ud800" stays text.
    assert landed[1]["properties"] == {"k\ufffd": "\U0001f600 ok", "path": "C:\\ud800"}
    accepted, rejected = loaded(server)
    assert [row["user_id"] for row in accepted] == ["good", "u\ufffd", "u\ufffd", "next"]
    assert [row["reason"] for row in rejected] == ['unknown type "\ufffd"']


def test_bytes_that_are_not_utf8_read_as_the_loader_reads_them_in_a_file(
    server: Server, key: str, tmp_path: Path
) -> None:
    now = iso(dt.datetime.now(dt.UTC))
    # Latin-1, an overlong NUL, an encoded surrogate, a cut sequence, past U+10FFFF.
    odd_bytes = b"Caf\xe9 \xc0\x80 \xed\xa0\x80 \xe2\x82 \xf4\x90\x80\x80 \xff"
    line = b'{"type": "track", "userId": "u-' + odd_bytes + b'", "event": "Clicked", '
    line += f'"messageId": "m-1", "timestamp": "{now}"}}'.encode()
    good = json.dumps({"type": "identify", "userId": "good", "timestamp": now}).encode()
    response = httpx.post(
        f"{server.url}/v1/batch",
        content=b'{"batch": [' + line + b", " + good + b"]}",
        auth=(key, ""),
    )
    assert response.json() == {"success": True, "accepted": 2, "rejected": 0}
    accepted, _ = loaded(server)
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_bytes(line + b"\n")
    (from_file,) = parse_file(
        dropped, "dropped.jsonl", dt.datetime.now(dt.UTC)
    ).accepted.to_pylist()
    assert accepted[0]["user_id"] == from_file["user_id"]
    assert str(accepted[0]["user_id"]).startswith("u-Caf\ufffd ")
    assert accepted[1]["user_id"] == "good"


def test_nul_escapes_are_text_and_raw_control_characters_are_malformed_json(
    server: Server, key: str
) -> None:
    now = iso(dt.datetime.now(dt.UTC))
    escaped = r'{"userId": "u\u0000", "event": "e\u0000", "timestamp": "NOW"}'.replace("NOW", now)
    with httpx.Client(auth=(key, "")) as http:
        nul = http.post(f"{server.url}/v1/track", content=escaped.encode())
        raw = http.post(f"{server.url}/v1/track", content=escaped.replace(r"\u0000", "\0").encode())
        after = http.post(f"{server.url}/v1/identify", json={"userId": "next"})
        ports = {client_port(r) for r in (nul, raw, after)}
    assert nul.json() == {"success": True, "accepted": 1, "rejected": 0}
    assert raw.status_code == 400
    assert raw.json()["error"].startswith("malformed JSON")
    assert after.status_code == 200
    assert len(ports) == 1, "the server closed the connection"
    accepted, _ = loaded(server)
    assert [(row["user_id"], row["event"]) for row in accepted] == [("u\0", "e\0"), ("next", None)]
