"""What every HTTP route of ``sluice serve`` reads alike: a JSON request body, the key in
an ``Authorization`` header, and which read key may read (``read_key``: the query API and
the live figures refuse alike). Each API words its own answers from the errors raised here.

JSON is read as the landing loader reads a line: bytes that are not UTF-8 and lone UTF-16
surrogate escapes (``"\\ud800"``, valid JSON) become U+FFFD, and a leading byte-order mark is
dropped, so an event the API takes is the event the loader would take from a file. (The
loader's rule is ``common.contract.valid_utf8``, Python's UTF-8 decoding with replacement,
as here; this base layer cannot import a stage, and tests/ingestion/api/test_text.py keeps the
two alike over real HTTP.) orjson reads the body first (the fast path for every request); the
standard library gets only what orjson refuses. Hand-written because no HTTP library reads
JSON this way. ``log_access`` writes the one access-log line of the read routes. Reads no
environment.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Protocol

import orjson


class MalformedBody(ValueError):
    """A request body that is not JSON; the message says why (``malformed JSON: ...``)."""


class BadCredentials(ValueError):
    """An ``Authorization: Basic`` header whose credentials are not base64 of UTF-8 text."""


class KeyRefused(ValueError):
    """A request whose key may not read: ``status`` is 401 (no key, an unknown or revoked
    one) or 403 (a write key); the message says what to send instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class KeyLookup(Protocol):
    """What ``common.keys.KeyStore`` answers about a key."""

    def source_of(self, key: str) -> str | None: ...
    def reader_of(self, key: str) -> str | None: ...


def parse_json(body: bytes) -> Any:
    """The JSON document of a request body (see the module docstring for odd text)."""
    if not body.strip():
        raise MalformedBody("malformed JSON: the body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _parse_odd(body)


def _parse_odd(body: bytes) -> Any:
    """What orjson refuses: bad text, a leading byte-order mark, and anything else that JSON
    (and the loader) allow and the standard library reads; else MalformedBody."""
    text = body.decode("utf-8", errors="replace").removeprefix("\ufeff")
    text = _SURROGATE_ESCAPE.sub(_replace_lone_surrogate, text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        try:
            return json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise MalformedBody(f"malformed JSON: {error}") from None


# A surrogate escape with its partner when it has one. An escaped backslash is matched first,
# so the text backslash + "ud800" (written "\\ud800") is not taken for an escape.
_SURROGATE_ESCAPE = re.compile(
    r"\\\\"
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)


def _replace_lone_surrogate(match: re.Match[str]) -> str:
    text = match.group()
    return "\\ufffd" if len(text) == 6 else text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def authorization_key(header: str) -> tuple[str, str]:
    """The scheme of an ``Authorization`` header, in lower case, and the key it carries: a
    Bearer token, or the user name of Basic credentials; ``""`` when it carries none (no
    value, an empty user name, another scheme). Raises BadCredentials when Basic credentials
    do not decode."""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return scheme, value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadCredentials("Authorization header is not valid Basic credentials") from None
        return scheme, decoded.partition(":")[0]
    return scheme, ""


def read_key(keys: KeyLookup, header: str) -> str:
    """The name of the active read key that an ``Authorization`` header carries (a Bearer
    token or the user name of Basic credentials); raises KeyRefused for anything else."""
    try:
        _scheme, key = authorization_key(header)
    except BadCredentials:
        key = ""
    if not key:
        raise KeyRefused(401, "no read key: send it as 'Authorization: Bearer <read key>'")
    name = keys.reader_of(key)
    if name is not None:
        return name
    if keys.source_of(key) is not None:
        raise KeyRefused(
            403,
            "this is a write key, which cannot read; create a read key with "
            "`sluice keys create NAME --read`",
        )
    raise KeyRefused(401, "unknown or revoked read key")


ACCESS_LOG = logging.getLogger("sluice.api.access")


def log_access(
    method: str, path: str, status: int, elapsed: float, fields: Mapping[str, Any]
) -> None:
    """One JSON line in the access log (``sluice.api.access``) for a request to a read route:
    method, path, status, milliseconds and the route's own fields (never a key or a body)."""
    if ACCESS_LOG.isEnabledFor(logging.INFO):
        entry = {"method": method, "path": path, "status": status, "ms": round(elapsed * 1000, 2)}
        ACCESS_LOG.info(json.dumps(entry | dict(fields), default=str))
