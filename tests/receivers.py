"""Real receivers on 127.0.0.1 for the delivery tests (reports, data alerts, platform
alerts): a chat webhook (an HTTP server keeping every POST's JSON) and an SMTP server
(aiosmtpd keeping every message). ``tests/conftest.py`` makes ``webhook`` and ``smtp``
fixtures of every test."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller


class Webhook:
    """A chat webhook on 127.0.0.1: keeps the JSON of every POST, answers ``status`` after
    ``delay`` seconds."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                assert self.headers["Content-Type"].startswith("application/json")
                hook.posts.append(json.loads(self.rfile.read(length)))
                time.sleep(hook.delay)
                body = b"ok" if hook.status < 300 else b"invalid_token"
                # A client that timed out has gone: nothing to answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(hook.status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/secret-token"

    def texts(self) -> list[str]:
        return [post["text"] for post in self.posts]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()
        thread.join(5)


class Inbox:
    """aiosmtpd handler: keeps every message the SMTP server on 127.0.0.1 receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in self.messages]


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    with socket.socket() as probe:  # a free port (aiosmtpd checks readiness on the port given)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()
