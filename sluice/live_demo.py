"""``sluice live-demo``: the real-time tier on the laptop default, end to end, with no server
beyond Sluice's own.

It starts ``sluice serve`` (on a free port of 127.0.0.1 unless one is given) and ``sluice
stream`` beside it on the data directory, makes a write key and a read key named
``live-demo`` (replacing the ones of an earlier run), and sends a steady trickle of product
events through the HTTP API, as a Segment library would (``POST /v1/batch``, Basic auth with
the write key): pages, feature use, sign-ups and orders with revenue, timestamped now. Every
couple of seconds it prints what ``GET /v1/live`` (the dashboard's live panel) answers: the
events acknowledged, the events visible in the real-time store, this minute's events, the
users active in the last 5 minutes, orders and revenue today and the ack-to-visible lag.
While it runs, the dashboard's URL and read key are printed so the live panel can be watched
filling. Both processes are stopped at the end (or on Ctrl-C). The events stay in the landing
area, so the next ``sluice load`` loads them into the batch tier as well.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.keys import KeyFileError, KeyStore
from common.settings import Settings

KEY_NAME = "live-demo"
SLUICE = str(Path(sys.executable).with_name("sluice"))
START_TIMEOUT_SECONDS = 30.0
PRINT_EVERY_SECONDS = 2.0
EVENTS = ("Feature Used", "Feature Used", "Feature Used", "Signed Up", "Order Completed")


class LiveDemoError(RuntimeError):
    """The demo could not start its processes; the message says why and what to do."""


@dataclass(frozen=True)
class Totals:
    sent: int
    visible: int
    lag_p95: float | None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keys(settings: Settings) -> tuple[str, str]:
    """A fresh write key and read key named ``live-demo``."""
    store = KeyStore(settings.api_keys_path)
    for kind_name in (KEY_NAME, f"{KEY_NAME}-screen"):
        with contextlib.suppress(KeyFileError):
            store.revoke(kind_name)
    return store.create(KEY_NAME), store.create(f"{KEY_NAME}-screen", kind="read")


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def _request(url: str, key: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Authorization": _basic(key), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _events(rng: random.Random, count: int, users: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC).isoformat()
    batch = []
    for _ in range(count):
        user = f"demo-user-{rng.randrange(users)}"
        message: dict[str, Any] = {"userId": user, "timestamp": now, "messageId": str(uuid.uuid4())}
        if rng.random() < 0.3:
            message |= {"type": "page", "name": "Home"}
        else:
            event = rng.choice(EVENTS)
            message |= {"type": "track", "event": event}
            if event == "Order Completed":
                message["properties"] = {"revenue": round(rng.uniform(5, 120), 2)}
        batch.append(message)
    return batch


@contextlib.contextmanager
def _processes(settings: Settings, port: int, log_dir: Path) -> Iterator[str]:
    """``sluice serve`` and ``sluice stream`` on the data directory; yields the server's URL."""
    env = {**os.environ, **settings.subprocess_env()}
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    logs = [(log_dir / name).open("ab") for name in ("serve.log", "stream.log")]
    url = f"http://127.0.0.1:{port}"
    try:
        commands = (
            [SLUICE, "serve", "--host", "127.0.0.1", "--port", str(port)],
            [SLUICE, "stream"],
        )
        for command, log in zip(commands, logs, strict=True):
            started.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            for process, name in zip(started, ("serve", "stream"), strict=True):
                if process.poll() is not None:
                    tail = (log_dir / f"{name}.log").read_text(errors="replace")[-600:]
                    raise LiveDemoError(f"`sluice {name}` exited: {tail.strip()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/healthz", timeout=1),
            ):
                break
            if time.monotonic() > deadline:
                raise LiveDemoError(f"`sluice serve` did not answer on {url} in 30 s")
            time.sleep(0.1)
        yield url
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


def run(
    settings: Settings,
    seconds: float,
    rate: int,
    port: int | None,
    echo: Callable[[str], None],
) -> Totals:
    """Send ``rate`` events a second for ``seconds`` (0: until Ctrl-C), printing the live
    figures; returns what was sent, what became visible and the last lag p95."""
    port = port or free_port()
    write_key, read_key = _keys(settings)
    rng = random.Random(7)
    sent = visible = 0
    lag_p95: float | None = None
    with _processes(settings, port, settings.realtime_store_path.parent / "live-demo") as url:
        echo(f"sluice serve on {url}, sluice stream beside it, data in {settings.data_dir}")
        echo(f"Watch the live panel: {url}/dashboard  (read key: {read_key})")
        base = _added_before(url, read_key)
        started = time.monotonic()
        next_print = started + PRINT_EVERY_SECONDS
        stop_at = started + seconds if seconds else float("inf")
        try:
            while time.monotonic() < stop_at:
                tick = time.monotonic()
                batch = _events(rng, max(1, rate // 10), users=200)
                answer = _request(f"{url}/v1/batch", write_key, {"batch": batch})
                sent += int(answer.get("accepted", 0))
                if time.monotonic() >= next_print:
                    visible, lag_p95 = _print_live(url, read_key, sent, base, echo)
                    next_print += PRINT_EVERY_SECONDS
                time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        except KeyboardInterrupt:
            echo("stopping")
        # The last batch: seen by the worker within a few polls.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            visible, lag_p95 = _print_live(url, read_key, sent, base, lambda _line: None)
            if visible >= sent:
                break
            time.sleep(0.2)
        visible, lag_p95 = _print_live(url, read_key, sent, base, echo)
    return Totals(sent, visible, lag_p95)


def _added_before(url: str, read_key: str) -> int:
    """Events the store held before this run (an earlier demo's), once the worker is up."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            body = _request(f"{url}/v1/live?minutes=1", read_key)
            return int(body["counters"].get("added", 0))
        except urllib.error.HTTPError as error:  # 503 until the worker has made its store
            if error.code != 503 or time.monotonic() > deadline:
                raise LiveDemoError(f"/v1/live answered HTTP {error.code}") from None
            time.sleep(0.1)


def _print_live(
    url: str, read_key: str, sent: int, base: int, echo: Callable[[str], None]
) -> tuple[int, float | None]:
    body = _request(f"{url}/v1/live?minutes=5", read_key)
    visible = int(body["counters"].get("added", 0)) - base
    today, lag = body["today"], body["lag"]
    this_minute = body["minutes"][-1]["events"]
    p95 = lag["p95_seconds"]
    lag_text = "-" if p95 is None else f"{p95:.2f} s"
    echo(
        f"sent {sent:,}, visible {visible:,}; this minute {this_minute:,} events, "
        f"{round(body['active_users_5_minutes']):,} users active in 5 min, "
        f"{today['orders']:,} orders and ${today['revenue_usd']:,.2f} today; "
        f"ack-to-visible p95 {lag_text}"
    )
    return visible, p95
