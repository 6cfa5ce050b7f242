"""Budgets of the query API: a soft limit per read key of rows scanned per UTC day, below the
quota that refuses queries (``serving.quotas``).

A query that takes a key over its budget is answered as usual, and raises the platform alert
``query_budget/<key>`` through the one alert engine (``common.alerting``: the webhook and mail
of ``SLUICE_REPORT_WEBHOOK_URL`` and ``SLUICE_SMTP_HOST``, once per overrun, with the
cool-down ``SLUICE_PLATFORM_ALERT_COOLDOWN_MINUTES``), into the same state file as the
Dagster alert sensor's. The first query of a key on the next UTC day resolves it. Each answer
says where the key stands (``status``).

The budget is ``SLUICE_QUERY_BUDGET_SCAN_ROWS_PER_DAY``, or the key's own in
``SLUICE_QUERY_BUDGETS``. Alerts are raised and delivered on a thread of their own, so a slow
webhook never holds an answer back. Reads no environment: the budgets come from ``Settings``.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from common.alerting import EventAlerts
from common.settings import Settings, query_budgets

log = logging.getLogger("sluice.api.budgets")


def alert_name(reader: str) -> str:
    return f"query_budget/{reader}"


class QueryBudgets:
    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.alerts = EventAlerts(
            settings,
            dt.timedelta(minutes=settings.platform_alert_cooldown_minutes),
            log=log.warning,
        )
        # One thread: alerts are raised in the order the queries were charged.
        self._sender = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="budgets")
        # (key, UTC day) whose alert was resolved: a key whose queries are charged nothing
        # (``select 1``) would otherwise resolve it, a transaction on the alert state file,
        # at every query of the day.
        self._resolved: set[tuple[str, dt.date]] = set()

    def status(self, reader: str, before: int, after: int) -> dict[str, Any]:
        """Where ``reader`` stands after a query took its rows of today from ``before`` to
        ``after``; raises the alert when the query crossed the budget, and resolves it at the
        key's first query of a day under the budget."""
        budget = self.settings.query_budget(reader)
        now = self.clock()
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        if before < budget <= after:
            self._sender.submit(self._raise, reader, after, budget, day, now)
        elif before == 0 and after < budget and (reader, day) not in self._resolved:
            if any(seen != day for _, seen in self._resolved):
                self._resolved = {entry for entry in self._resolved if entry[1] == day}
            self._resolved.add((reader, day))
            self._sender.submit(self._resolve, reader, day, now)
        return {
            "scanned_rows_today": after,
            "budget_rows_per_day": budget,
            "quota_rows_per_day": self.settings.query_scan_rows_per_day,
            "over_budget": after >= budget,
        }

    def _raise(self, reader: str, used: int, budget: int, day: dt.date, now: float) -> None:
        which = (
            "SLUICE_QUERY_BUDGETS"
            if reader in self._named()
            else "SLUICE_QUERY_BUDGET_SCAN_ROWS_PER_DAY"
        )
        quota = self.settings.query_scan_rows_per_day
        text = (
            f"Sluice read key {reader!r} overran its query budget: {used:,} rows scanned on "
            f"{day} (UTC), over its budget of {budget:,} a day ({which}). Its queries are "
            f"still answered until the quota of {quota:,} (SLUICE_QUERY_SCAN_ROWS_PER_DAY)."
        )
        fields = [
            ("read key", reader),
            ("rows scanned today", f"{used:,}"),
            ("budget", f"{budget:,}"),
            ("quota", f"{quota:,}"),
        ]
        try:
            self.alerts.raise_alert(alert_name(reader), text, fields, now=now)
        except Exception:  # an alert must never take the query API down
            log.exception("could not raise the budget alert of read key %r", reader)

    def _resolve(self, reader: str, day: dt.date, now: float) -> None:
        text = (
            f"Sluice read key {reader!r} is within its query budget again: a new UTC day ({day})."
        )
        try:
            self.alerts.resolve(alert_name(reader), text, [("read key", reader)], now=now)
        except Exception:
            log.exception("could not resolve the budget alert of read key %r", reader)

    def _named(self) -> set[str]:
        return set(query_budgets("SLUICE_QUERY_BUDGETS", self.settings.query_budgets))

    def close(self) -> None:
        """Wait for the alerts under way (a webhook answers within its timeout)."""
        self._sender.shutdown(wait=True)
