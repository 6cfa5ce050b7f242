"""The simulation: who the users are, what each does when, and how each message is delivered.

Everything is a numpy column, one row per user or per message, drawn from one random
generator in a fixed order, so the same seed gives the same stream. No JSON is made here
(see ``write``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from ingestion.generator.params import (
    ACTIVATION_SHARE,
    APP_PAGE_WEIGHTS,
    BUYER_SHARE,
    CURRENCIES,
    CURRENCY_WEIGHTS,
    DAY_MS,
    DUPLICATE_NEXT_DAY_SHARE,
    DUPLICATE_SHARE,
    EVENT_GAP_MS,
    EXISTING_USER_SHARE,
    EXTRA_SESSIONS_PER_DAY,
    FEATURE_USED,
    FEATURES,
    HOUR_MS,
    HOURLY_VOLUME,
    IDENTIFY,
    IDENTIFY_SHARE,
    IN_APP_EVENT_WEIGHTS,
    IN_APP_EVENTS,
    LANDING_PAGE_WEIGHTS,
    LATE_SHARE,
    MALFORMED_KIND_WEIGHTS,
    MALFORMED_SHARE,
    MAX_LATE_DAYS,
    MEAN_LIFETIME_DAYS,
    MEDIAN_EVENTS_PER_SESSION,
    MINUTE_MS,
    ORDER_COMPLETED,
    ORPHAN_ORDER_FIX_SHARE,
    PAGE,
    PAGES,
    PLAN_WEIGHTS,
    PLANS,
    PLATFORM_WEIGHTS,
    PRE_SIGNUP_EXTRA_VIEWS,
    QUICK_CHURN_MEAN_DAYS,
    QUICK_CHURN_SHARE,
    REPORT_VIEWED,
    REPORTS,
    SCREEN,
    SECOND_MS,
    SIGNED_UP,
    SIGNUP_METHODS,
    SIGNUP_QUIET_MS,
    TRACK,
    VIEW_SHARE,
    WEB,
    WEEKLY_VOLUME,
    ZONES,
)

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Users:
    """One row per user: who they are and how they behave."""

    zone: Ints
    offset_ms: Ints
    platform: Ints
    is_new: Bools
    signup_ms: Ints
    churn_ms: Ints
    active_rate: Floats  # chance of being active on a weekday
    session_events: Floats  # mean events per session
    order_rate: Floats  # share of the user's track events that are orders
    plan: Ints
    currency: Ints  # index into CURRENCIES, or -1 for none (USD)

    @property
    def size(self) -> int:
        return int(self.zone.size)


@dataclass(frozen=True)
class Stream:
    """One row per message, before any defect."""

    instant_ms: Ints
    user: Ints
    kind: Ints  # index into MESSAGE_TYPES
    event: Ints  # index into EVENTS, -1 when not a track
    page: Ints  # index into PAGES, -1 when not a page or screen
    detail: Ints  # index into FEATURES, REPORTS or SIGNUP_METHODS by event, else -1
    anonymous: Bools  # sent before sign-up, so only anonymousId

    @property
    def size(self) -> int:
        return int(self.instant_ms.size)

    def take(self, index: Ints) -> Stream:
        return Stream(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence[Stream]) -> Stream:
        return Stream(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Stream)}
        )


@dataclass(frozen=True)
class Delivery:
    """Where each message goes: defects, delivery days, and the lines of every file in order."""

    malformed: Ints  # messages written as malformed lines
    malformed_kind: Ints  # per malformed message: index into MALFORMED_KIND_WEIGHTS
    late: Ints  # messages delivered after their UTC date
    sent_ms: Ints  # per message
    line_message: Ints  # per line, in file order: which message it writes
    day_counts: Ints  # lines per file


def simulate(
    rng: np.random.Generator, start: dt.date, days: int, users: int
) -> tuple[Users, Stream, Delivery]:
    """The users, their messages in time order (within the ``days`` from ``start``), and the
    delivery of every message: its defects, its day, its place in its file."""
    start_ms = epoch_ms(start)
    people = population(rng, start, days, users)
    stream = Stream.concat([activity(rng, people, start, days), signups(rng, people)])
    in_window = (stream.instant_ms >= start_ms) & (stream.instant_ms < start_ms + days * DAY_MS)
    stream = stream.take(np.flatnonzero(in_window))
    stream = stream.take(np.argsort(stream.instant_ms, kind="stable"))
    complete_funnel(rng, stream)
    return people, stream, deliver(rng, stream, start_ms, days)


def epoch_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY_MS


def probabilities(weights: Sequence[float] | Floats) -> Floats:
    array = np.asarray(weights, dtype=np.float64)
    probabilities: Floats = array / array.sum()
    return probabilities


def _local_time_of_day(rng: np.random.Generator, size: int) -> Ints:
    """Milliseconds after local midnight, busier in the daytime."""
    hours = rng.choice(24, size=size, p=probabilities(HOURLY_VOLUME))
    return hours * HOUR_MS + rng.integers(0, HOUR_MS, size=size)


def _within_groups(values: Floats, counts: Ints) -> Floats:
    """Running sum of ``values`` restarting at every group of ``counts`` consecutive rows."""
    total = np.cumsum(values)
    ends = np.cumsum(counts)
    before = np.concatenate([[0.0], total[ends[:-1] - 1]]) if counts.size else total[:0]
    within: Floats = total - np.repeat(before, counts)
    return within


def population(rng: np.random.Generator, start: dt.date, days: int, users: int) -> Users:
    zone = rng.choice(len(ZONES), size=users, p=probabilities([z.weight for z in ZONES]))
    offset_ms = np.array([z.offset_minutes for z in ZONES], dtype=np.int64)[zone] * MINUTE_MS
    platform = rng.choice(len(PLATFORM_WEIGHTS), size=users, p=probabilities(PLATFORM_WEIGHTS))
    is_new = rng.random(users) >= EXISTING_USER_SHARE
    weekdays = (start.weekday() + np.arange(days)) % 7
    signup_day = np.where(
        is_new,
        rng.choice(days, size=users, p=probabilities(np.asarray(WEEKLY_VOLUME)[weekdays])),
        -rng.integers(1, 366, size=users),
    )
    local_ms = signup_day * DAY_MS + _local_time_of_day(rng, users)
    signup_ms = epoch_ms(start) + local_ms - offset_ms
    quick = is_new & (rng.random(users) < QUICK_CHURN_SHARE)
    mean_life = np.where(quick, QUICK_CHURN_MEAN_DAYS, MEAN_LIFETIME_DAYS) * DAY_MS
    lifetime = rng.exponential(mean_life).astype(np.int64)
    churn_ms = np.maximum(signup_ms, epoch_ms(start)) + lifetime
    buyer = rng.random(users) < BUYER_SHARE
    currency_choice = rng.choice(
        len(CURRENCY_WEIGHTS), size=users, p=probabilities(CURRENCY_WEIGHTS)
    )
    return Users(
        zone=zone,
        offset_ms=offset_ms,
        platform=platform,
        is_new=is_new,
        signup_ms=signup_ms,
        churn_ms=churn_ms,
        active_rate=rng.beta(2.0, 3.0, size=users),
        session_events=rng.lognormal(np.log(MEDIAN_EVENTS_PER_SESSION), 0.5, size=users),
        order_rate=np.where(buyer, rng.uniform(0.01, 0.08, size=users), 0.0),
        plan=rng.choice(len(PLANS), size=users, p=probabilities(PLAN_WEIGHTS)),
        currency=np.where(currency_choice == len(CURRENCIES), -1, currency_choice),
    )


def _views(platform: Ints) -> Ints:
    return np.where(platform == WEB, PAGE, SCREEN)


def activity(rng: np.random.Generator, users: Users, start: dt.date, days: int) -> Stream:
    """Sessions of in-app events on the local days each user is active."""
    start_ms = epoch_ms(start)
    first_day = (users.signup_ms + users.offset_ms - start_ms) // DAY_MS
    last_day = (users.churn_ms + users.offset_ms - start_ms) // DAY_MS
    active_users: list[Ints] = []
    active_days: list[Ints] = []
    # Local days one past either end of the period still reach into it in UTC.
    for day in range(-1, days + 1):
        weight = WEEKLY_VOLUME[(start.weekday() + day) % 7]
        chance = rng.random(users.size)
        active = (first_day <= day) & (day <= last_day) & (chance < users.active_rate * weight)
        index = np.flatnonzero(active)
        active_users.append(index)
        active_days.append(np.full(index.size, day, dtype=np.int64))
    user = np.concatenate(active_users)
    local_day = np.concatenate(active_days)

    sessions = 1 + rng.poisson(EXTRA_SESSIONS_PER_DAY, size=user.size)
    user = np.repeat(user, sessions)
    local_day = np.repeat(local_day, sessions)
    local_start = local_day * DAY_MS + _local_time_of_day(rng, user.size)
    session_start = start_ms + local_start - users.offset_ms[user]
    counts = 1 + rng.poisson(users.session_events[user])
    gaps = rng.exponential(EVENT_GAP_MS, size=int(counts.sum()))
    gaps[np.cumsum(counts) - counts] = 0.0
    instant = np.repeat(session_start, counts) + _within_groups(gaps, counts).astype(np.int64)
    user = np.repeat(user, counts)

    size = user.size
    roll = rng.random(size)
    kind = np.where(
        roll < IDENTIFY_SHARE,
        IDENTIFY,
        np.where(roll < IDENTIFY_SHARE + VIEW_SHARE, _views(users.platform[user]), TRACK),
    )
    in_app = np.asarray(IN_APP_EVENTS)[
        rng.choice(len(IN_APP_EVENTS), size=size, p=probabilities(IN_APP_EVENT_WEIGHTS))
    ]
    is_order = rng.random(size) < users.order_rate[user]
    event = np.where(kind == TRACK, np.where(is_order, ORDER_COMPLETED, in_app), -1)
    app_page = rng.choice(len(PAGES), size=size, p=probabilities(APP_PAGE_WEIGHTS))
    page = np.where((kind == PAGE) | (kind == SCREEN), app_page, -1)
    detail = np.where(
        event == FEATURE_USED,
        rng.integers(0, len(FEATURES), size=size),
        np.where(event == REPORT_VIEWED, rng.integers(0, len(REPORTS), size=size), -1),
    )
    stream = Stream(
        instant_ms=instant,
        user=user,
        kind=kind,
        event=event,
        page=page,
        detail=detail,
        anonymous=np.zeros(size, dtype=np.bool_),
    )
    signed_up = instant > users.signup_ms[user] + SIGNUP_QUIET_MS
    return stream.take(np.flatnonzero(signed_up & (instant < users.churn_ms[user])))


def signups(rng: np.random.Generator, users: Users) -> Stream:
    """For each new user: anonymous views, Signed Up, identify, and often a first Feature Used."""
    new = np.flatnonzero(users.is_new)
    signup = users.signup_ms[new]

    views = 1 + rng.poisson(PRE_SIGNUP_EXTRA_VIEWS, size=new.size)
    viewer = np.repeat(new, views)
    before = _within_groups(rng.exponential(EVENT_GAP_MS, size=int(views.sum())), views)
    landing = rng.choice(len(PAGES), size=viewer.size, p=probabilities(LANDING_PAGE_WEIGHTS))
    visits = Stream(
        instant_ms=np.repeat(signup, views) - 1 - before.astype(np.int64),
        user=viewer,
        kind=_views(users.platform[viewer]),
        event=np.full(viewer.size, -1),
        page=landing,
        detail=np.full(viewer.size, -1),
        anonymous=np.ones(viewer.size, dtype=np.bool_),
    )
    none = np.full(new.size, -1)
    signed_up = Stream(
        instant_ms=signup,
        user=new,
        kind=np.full(new.size, TRACK),
        event=np.full(new.size, SIGNED_UP),
        page=none,
        detail=rng.integers(0, len(SIGNUP_METHODS), size=new.size),
        anonymous=np.zeros(new.size, dtype=np.bool_),
    )
    identify = Stream(
        instant_ms=signup + SECOND_MS + rng.integers(0, 500, size=new.size),
        user=new,
        kind=np.full(new.size, IDENTIFY),
        event=none,
        page=none,
        detail=none,
        anonymous=np.zeros(new.size, dtype=np.bool_),
    )
    activated = new[rng.random(new.size) < ACTIVATION_SHARE]
    delay = SIGNUP_QUIET_MS + rng.exponential(4 * MINUTE_MS, size=activated.size).astype(np.int64)
    activation = Stream(
        instant_ms=users.signup_ms[activated] + delay,
        user=activated,
        kind=np.full(activated.size, TRACK),
        event=np.full(activated.size, FEATURE_USED),
        page=np.full(activated.size, -1),
        detail=rng.integers(0, len(FEATURES), size=activated.size),
        anonymous=np.zeros(activated.size, dtype=np.bool_),
    )
    return Stream.concat([visits, signed_up, identify, activation])


def complete_funnel(rng: np.random.Generator, stream: Stream) -> None:
    """Turn most orders that come before the user's first Feature Used into Feature Used."""
    if stream.size == 0:
        return
    by_user = np.lexsort((stream.instant_ms, stream.user))
    user = stream.user[by_user]
    event = stream.event[by_user]
    used = (event == FEATURE_USED).astype(np.int64)
    used_before = np.cumsum(used) - used
    first_of_user = np.concatenate([[True], user[1:] != user[:-1]])
    used_before_user = np.maximum.accumulate(np.where(first_of_user, used_before, 0))
    orphans = by_user[(event == ORDER_COMPLETED) & (used_before == used_before_user)]
    fixed = orphans[rng.random(orphans.size) < ORPHAN_ORDER_FIX_SHARE]
    stream.event[fixed] = FEATURE_USED
    stream.detail[fixed] = rng.integers(0, len(FEATURES), size=fixed.size)


def _pick(rng: np.random.Generator, candidates: Bools, share: float, of: int) -> Ints:
    """``share`` of ``of`` rows (rounded up) drawn from ``candidates``, in row order."""
    pool = np.flatnonzero(candidates)
    count = min(math.ceil(share * of), pool.size)
    return np.sort(rng.choice(pool, size=count, replace=False))


def deliver(rng: np.random.Generator, stream: Stream, start_ms: int, days: int) -> Delivery:
    size = stream.size
    utc_day = (stream.instant_ms - start_ms) // DAY_MS
    # Damaging a sign-up would leave orders without one; the funnel tests rely on it.
    anchors = (stream.event == SIGNED_UP) | (stream.kind == IDENTIFY)
    malformed = _pick(rng, ~anchors, MALFORMED_SHARE, size)
    malformed_kind = rng.choice(
        len(MALFORMED_KIND_WEIGHTS), size=malformed.size, p=probabilities(MALFORMED_KIND_WEIGHTS)
    )
    valid = np.ones(size, dtype=np.bool_)
    valid[malformed] = False
    events = size - malformed.size

    late = _pick(rng, valid & (utc_day < days - 1), LATE_SHARE, events)
    delivery_day = utc_day.copy()
    lateness = rng.integers(1, MAX_LATE_DAYS + 1, size=late.size)
    delivery_day[late] = np.minimum(utc_day[late] + lateness, days - 1)
    sent_ms = stream.instant_ms + rng.integers(200, 5 * SECOND_MS, size=size)
    # A late event was queued on the device and sent on the day it is delivered.
    delivery_start = start_ms + delivery_day[late] * DAY_MS
    sent_ms[late] = delivery_start + rng.integers(0, DAY_MS - 10 * SECOND_MS, size=late.size)
    arrival_ms = sent_ms + rng.integers(20, 2 * SECOND_MS, size=size)

    duplicates = _pick(rng, valid, DUPLICATE_SHARE, events)
    next_day = (rng.random(duplicates.size) < DUPLICATE_NEXT_DAY_SHARE) & (
        delivery_day[duplicates] < days - 1
    )
    duplicate_day = delivery_day[duplicates] + next_day
    retry_ms = rng.exponential(30 * SECOND_MS, size=duplicates.size).astype(np.int64)
    next_day_ms = start_ms + duplicate_day * DAY_MS + rng.integers(0, DAY_MS, size=duplicates.size)
    duplicate_arrival = np.where(next_day, next_day_ms, arrival_ms[duplicates] + 1 + retry_ms)

    line_message = np.concatenate([np.arange(size), duplicates])
    line_day = np.concatenate([delivery_day, duplicate_day])
    line_arrival = np.concatenate([arrival_ms, duplicate_arrival])
    order = np.lexsort((line_arrival, line_day))
    return Delivery(
        malformed=malformed,
        malformed_kind=malformed_kind,
        late=late,
        sent_ms=sent_ms,
        line_message=line_message[order],
        day_counts=np.bincount(line_day, minlength=days),
    )
