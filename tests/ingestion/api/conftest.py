"""A real ingest API server (``sluice serve``) on 127.0.0.1 in a subprocess, and write keys."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from common.keys import KeyStore
from common.settings import Settings

SLUICE = str(Path(sys.executable).with_name("sluice"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One ``sluice serve`` process; ``restart`` keeps the port and the data directory."""

    settings: Settings
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [SLUICE, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sluice serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("sluice serve did not become healthy in 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_key(self, name: str) -> str:
        return KeyStore(self.settings.api_keys_path).create(name)


def segments(settings: Settings, suffix: str = ".jsonl") -> list[Path]:
    return sorted(settings.api_sources_dir.glob(f"*/*{suffix}"))


def landed_lines(settings: Settings) -> list[str]:
    """Every line in the API's segments, open or closed."""
    lines: list[str] = []
    for path in sorted(settings.api_sources_dir.glob("*/*.jsonl*")):
        lines.extend(path.read_text().splitlines())
    return lines


def client_port(response: httpx.Response) -> int:
    """The local port of the connection that carried ``response``; 0 once it is closed."""
    try:
        return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])
    except OSError:
        return 0


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@pytest.fixture
def make_server(make_settings, tmp_path: Path) -> Iterator:  # type: ignore[no-untyped-def]
    """Start servers on fresh data directories; every one is stopped at the end."""
    started: list[Server] = []

    def _make(start: dt.date | None = None, **extra: str) -> Server:
        day = start or dt.date.today() - dt.timedelta(days=1)
        settings = make_settings(day, **extra)
        env = {**os.environ, **settings.subprocess_env(), **extra}
        server = Server(settings, free_port(), env, tmp_path / f"serve-{len(started)}.log")
        started.append(server)
        server.start()
        return server

    yield _make
    for server in started:
        server.stop(signal.SIGKILL)


@pytest.fixture
def server(make_server) -> Server:  # type: ignore[no-untyped-def]
    return make_server()


@pytest.fixture
def key(server: Server) -> str:
    return server.create_key("web")
