"""The real-time tests reuse the ingest API's real server fixture (``sluice serve`` on
127.0.0.1 in a subprocess), and an independent computation of the windows to compare with."""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from common.settings import CURRENCY_RATES_SEED
from tests.ingestion.api.conftest import make_server  # noqa: F401  (a fixture)


def seed_rates() -> dict[str, float]:
    with CURRENCY_RATES_SEED.open(newline="") as handle:
        return {row["currency"]: float(row["usd_per_unit"]) for row in csv.DictReader(handle)}


@dataclass
class Expected:
    """Minute windows computed from the valid, first copies of what a test sent."""

    events: dict[tuple[dt.datetime, str], int] = field(default_factory=lambda: defaultdict(int))
    orders: dict[dt.datetime, int] = field(default_factory=lambda: defaultdict(int))
    revenue: dict[dt.datetime, float] = field(default_factory=lambda: defaultdict(float))
    users: dict[dt.datetime, set[str]] = field(default_factory=lambda: defaultdict(set))


def expected_windows(messages: Iterable[dict[str, Any]]) -> Expected:
    """``messages`` are valid, counted once each, and not late; revenue by docs/events.md."""
    rates = seed_rates()
    expected = Expected()
    for message in messages:
        at = dt.datetime.fromisoformat(message["timestamp"]).astimezone(dt.UTC)
        minute = at.replace(second=0, microsecond=0)
        name = message.get("event") or message["type"]
        expected.events[minute, name] += 1
        if message["type"] in ("track", "page", "screen"):
            expected.users[minute].add(message.get("userId") or message["anonymousId"])
        if name == "Order Completed":
            properties = message.get("properties", {})
            amount = properties.get("revenue", properties.get("total", 0))
            currency = properties.get("currency", "USD").strip().upper()
            expected.orders[minute] += 1
            if currency in rates:
                expected.revenue[minute] += float(amount) * rates[currency]
    return expected
