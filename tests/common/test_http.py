"""The one JSON-body parser and key decoder that both APIs of ``sluice serve`` use."""

from __future__ import annotations

import base64

import pytest

from common.http import BadCredentials, MalformedBody, authorization_key, parse_json


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


def test_json_bodies_are_read_as_the_loader_reads_a_line() -> None:
    assert parse_json(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    assert parse_json('\ufeff{"a": 1}'.encode()) == {"a": 1}
    assert parse_json(b'{"a": "x\xffy"}') == {"a": "x\ufffdy"}
    assert parse_json(b'{"a": "\\ud800 and \\ud83d\\ude00"}') == {"a": "\ufffd and \U0001f600"}
    # An escaped backslash before "ud800" is text, not a surrogate escape.
    assert parse_json(b'{"a": "\\\\ud800"}') == {"a": "\\ud800"}
    assert parse_json(b"[1]") == [1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "malformed JSON: the body is empty"),
        (b"  \n", "malformed JSON: the body is empty"),
        (b"{", "malformed JSON: unexpected end of data"),
        (b'{"a": NaN}', "malformed JSON: "),
    ],
)
def test_what_is_not_json_says_so(body: bytes, message: str) -> None:
    with pytest.raises(MalformedBody, match=f"^{message}"):
        parse_json(body)


def test_the_key_comes_from_bearer_or_the_basic_user_name() -> None:
    assert authorization_key("Bearer sk_abc ") == ("bearer", "sk_abc")
    assert authorization_key("bearer sk_abc") == ("bearer", "sk_abc")
    assert authorization_key(basic(b"sk_abc:")) == ("basic", "sk_abc")
    assert authorization_key(basic(b"sk_abc:secret:more")) == ("basic", "sk_abc")
    assert authorization_key(basic(b":password")) == ("basic", "")
    assert authorization_key("Bearer") == ("bearer", "")
    assert authorization_key("Digest x=1") == ("digest", "")
    assert authorization_key("") == ("", "")


@pytest.mark.parametrize("header", ["Basic %%%", "Basic " + base64.b64encode(b"\xff:").decode()])
def test_basic_credentials_that_do_not_decode_are_refused(header: str) -> None:
    with pytest.raises(BadCredentials, match="not valid Basic credentials"):
        authorization_key(header)
