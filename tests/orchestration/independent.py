"""DAU and revenue computed straight from landing files in plain Python.

Deliberately shares no code or SQL with the pipeline: it re-implements the metric
definitions of docs/events.md so the two can check each other.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections import defaultdict
from pathlib import Path

from common.settings import DBT_PROJECT_DIR

TYPES = {"track", "identify", "page", "screen", "group", "alias"}
ACTIVE = {"track", "page", "screen"}


def _rates() -> dict[str, float]:
    with (DBT_PROJECT_DIR / "seeds" / "currency_rates.csv").open() as f:
        return {row["currency"]: float(row["usd_per_unit"]) for row in csv.DictReader(f)}


def _utc(text: object) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def valid_messages(landing_dir: Path) -> list[dict]:
    """Contract-abiding messages, each messageId once (first copy in file and line order)."""
    seen: set[str] = set()
    out = []
    for path in sorted(landing_dir.rglob("*.jsonl")):
        for line in path.read_text().split("\n"):
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict) or msg.get("type") not in TYPES:
                continue
            if not (msg.get("userId") or msg.get("anonymousId")):
                continue
            if msg["type"] == "track" and not msg.get("event"):
                continue
            moment = _utc(msg.get("timestamp"))
            if moment is None:
                continue
            objects = ("properties", "traits", "context")
            if any(msg.get(k) is not None and not isinstance(msg[k], dict) for k in objects):
                continue
            times = ("sentAt", "receivedAt")
            if any(msg.get(k) is not None and _utc(msg[k]) is None for k in times):
                continue
            if len(str(msg.get("messageId") or "")) > 100:
                continue
            message_id = msg.get("messageId") or "sluice-" + hashlib.md5(line.encode()).hexdigest()
            if message_id in seen:
                continue
            seen.add(message_id)
            msg["_date"] = moment.date().isoformat()
            out.append(msg)
    return out


def daily_metrics(landing_dir: Path) -> tuple[dict[str, int], dict[str, tuple[float, int, int]]]:
    """({day: active users}, {day: (revenue_usd, orders, paying users)}) for every day seen."""
    rates = _rates()
    active: dict[str, set[str]] = defaultdict(set)
    days: set[str] = set()
    revenue: dict[str, float] = defaultdict(float)
    orders: dict[str, int] = defaultdict(int)
    payers: dict[str, set[str]] = defaultdict(set)
    for msg in valid_messages(landing_dir):
        day = msg["_date"]
        days.add(day)
        user = msg.get("userId") or msg.get("anonymousId")
        if msg["type"] in ACTIVE:
            active[day].add(str(user))
        if msg["type"] == "track" and msg.get("event") == "Order Completed":
            props = msg.get("properties") or {}
            amount = _number(props.get("revenue"))
            if amount is None:
                amount = _number(props.get("total"))
            rate = rates.get(props.get("currency") or "USD")
            orders[day] += 1
            payers[day].add(str(user))
            revenue[day] += (amount or 0.0) * (rate or 0.0)
    dau = {day: len(active[day]) for day in days}
    money = {day: (revenue[day], orders[day], len(payers[day])) for day in days}
    return dau, money
