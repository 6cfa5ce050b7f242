"""Orders and their revenue in US dollars, by the marts' rules, for the real-time windows.

The rules are docs/events.md's, as ``dbt_project/models/staging/stg_events.sql`` applies them:
an order is a ``track`` of ``Order Completed``; its amount is ``properties.revenue``, else
``properties.total`` (a number or a numeric string), else 0; ``properties.currency`` (trimmed,
upper case, default ``USD``) is converted with the dbt seed ``currency_rates``, read from the
same file, and an unknown currency gives no dollar amount (the order still counts). Written
again in Python because the worker sees one message at a time and the model is SQL over a
table; ``tests/realtime`` checks both give the same dollars. Reads no environment.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.contract import text_of
from common.settings import CURRENCY_RATES_SEED

ORDER_EVENT = "Order Completed"
DEFAULT_CURRENCY = "USD"


def load_rates(path: Path = CURRENCY_RATES_SEED) -> dict[str, float]:
    """US dollars per unit of each currency, from the dbt seed."""
    with path.open(newline="") as handle:
        return {row["currency"]: float(row["usd_per_unit"]) for row in csv.DictReader(handle)}


def _amount(value: Any) -> float | None:
    """DuckDB's ``try_cast(<the field's JSON text> as double)``: numbers and numeric text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and "_" not in value:
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def order_revenue_usd(
    properties: Mapping[str, Any] | None, rates: Mapping[str, float]
) -> float | None:
    """The order's revenue in US dollars, or None when its currency has no rate."""
    properties = properties or {}
    amount = _amount(properties.get("revenue"))
    if amount is None:
        amount = _amount(properties.get("total"))
    currency = (text_of(properties.get("currency")) or "").strip().upper() or DEFAULT_CURRENCY
    rate = rates.get(currency)
    if rate is None:
        return None
    return (amount or 0.0) * rate
