"""wau_mau, event_counts_daily, funnel_daily and retention_weekly in plain Python.

Computed from the rows of core.fct_events with none of the marts' SQL, from the definitions
in docs/events.md, so that the two check each other.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

WEEK = dt.timedelta(days=7)


@dataclass(frozen=True)
class Event:
    event_date: dt.date
    event_at: dt.datetime
    event_type: str
    event_name: str | None
    user_key: str
    is_active_event: bool
    is_order: bool


FCT_EVENTS_SQL = (
    "select event_date, event_at, event_type, event_name, user_key, is_active_event, is_order "
    "from core.fct_events"
)


def wau_mau(events: Iterable[Event]) -> list[tuple]:
    events = list(events)
    active: dict[dt.date, set[str]] = defaultdict(set)
    for event in events:
        if event.is_active_event:
            active[event.event_date].add(event.user_key)
    rows = []
    for day in sorted({event.event_date for event in events}):

        def users(days: int, day: dt.date = day) -> set[str]:
            return set().union(*(active[day - dt.timedelta(days=back)] for back in range(days)))

        dau, wau, mau = len(active[day]), len(users(7)), len(users(28))
        rows.append((day, dau, wau, mau, dau / mau if mau else None))
    return rows


def event_counts_daily(events: Iterable[Event]) -> list[tuple]:
    messages: Counter[tuple] = Counter()
    users: dict[tuple, set[str]] = defaultdict(set)
    for event in events:
        key = (event.event_date, event.event_type, event.event_name)
        messages[key] += 1
        users[key].add(event.user_key)
    return sorted((*key, messages[key], len(users[key])) for key in messages)


def funnel_daily(events: Iterable[Event]) -> list[tuple]:
    sign_ups: dict[tuple[dt.date, str], dt.datetime] = {}
    features: dict[str, list[dt.datetime]] = defaultdict(list)
    orders: dict[str, list[dt.datetime]] = defaultdict(list)
    for event in events:
        if event.event_type == "track" and event.event_name == "Signed Up":
            key = (event.event_date, event.user_key)
            sign_ups[key] = min(sign_ups.get(key, event.event_at), event.event_at)
        if event.event_type == "track" and event.event_name == "Feature Used":
            features[event.user_key].append(event.event_at)
        if event.is_order:
            orders[event.user_key].append(event.event_at)
    cohorts: dict[dt.date, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (day, user), signed_up_at in sign_ups.items():
        ends = signed_up_at + WEEK
        used = [at for at in features[user] if signed_up_at <= at < ends]
        ordered = bool(used) and any(min(used) <= at < ends for at in orders[user])
        counts = cohorts[day]
        counts[0] += 1
        counts[1] += bool(used)
        counts[2] += ordered
    return [(day, *counts) for day, counts in cohorts.items()]


def retention_weekly(events: Iterable[Event]) -> list[tuple]:
    weeks_of: dict[str, set[dt.date]] = defaultdict(set)
    for event in events:
        if event.is_active_event:
            monday = event.event_date - dt.timedelta(days=event.event_date.weekday())
            weeks_of[event.user_key].add(monday)
    all_weeks = set().union(*weeks_of.values())
    cohort_of = {user: min(weeks) for user, weeks in weeks_of.items()}
    rows = []
    for cohort in sorted(set(cohort_of.values())):
        members = [user for user, first in cohort_of.items() if first == cohort]
        for week in sorted(w for w in all_weeks if w >= cohort):
            retained = sum(week in weeks_of[user] for user in members)
            rows.append(
                (cohort, (week - cohort).days // 7, len(members), retained, retained / len(members))
            )
    return rows
