"""Synthetic product events in the Segment spec: the landing files for demos, tests and benches.

``generate`` writes what a product's tracking libraries would deliver, one JSON-lines file per
delivery day, ``events-YYYY-MM-DD.jsonl`` (see ``landing_file_name``). Each file is written to
``<name>.tmp`` first and then renamed, so a file sensor never sees half a file.

The stream behaves like a real product's:

- users in a dozen time zones (fixed-offset zones, so ``context.timezone`` always agrees with
  the offset in ``timestamp``); more events in local daytime and on weekdays;
- some users exist before the first day, the others sign up during the period (a few
  anonymous page or screen views, then ``Signed Up`` and ``identify``), and users churn;
- a funnel ``Signed Up`` -> ``Feature Used`` -> ``Order Completed``: most orders come after
  the user's first ``Feature Used``;
- orders carry ``properties.revenue`` (or, for 10%, only ``properties.total``) in USD, EUR,
  GBP, JPY or CAD, or no currency at all (meaning USD).

And it has the defects a loader must survive, in fixed shares (rounded up, so even a tiny run
has at least one of each):

- duplicates (1% of events): the same line again, in the same file or the next day's;
- late events (0.5%): delivered 1-5 days after their UTC date, but never after the last day
  (so they are drawn only from events before the last day, and clamped to it);
- malformed lines (0.1% of messages): mostly truncated JSON, some valid JSON without
  ``userId`` and ``anonymousId``, some with a ``timestamp`` that is not a timestamp. Sign-ups
  and identifies are never damaged, so the funnel in the data stays whole.

The contract a valid line keeps: ``type`` is one of track, identify, page, screen;
``messageId`` is a string of at most 100 characters; ``userId`` or ``anonymousId`` is present
(pre-signup views carry only ``anonymousId``; server-side orders only ``userId``); ``event`` is
present on track, ``name`` on page and screen; ``timestamp`` is ISO-8601 with a UTC offset
(``Z`` or ``+hh:mm``/``-hh:mm``) showing the user's local time. Keys without a value are
left out rather than written as ``null``; ``sentAt`` (UTC) is missing on about 10% of lines.

Deterministic: the same arguments give byte-identical files (for given numpy and DuckDB
versions; no clock, no hash order). Columns are built with numpy and
DuckDB formats the JSON, so tens of millions of events take minutes, not hours.

Reads nothing from the environment.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SECOND_MS = 1_000

DUPLICATE_SHARE = 0.01
DUPLICATE_NEXT_DAY_SHARE = 0.2
LATE_SHARE = 0.005
MAX_LATE_DAYS = 5
MALFORMED_SHARE = 0.001
# Truncated JSON, valid JSON without userId and anonymousId, a timestamp that is no timestamp.
TRUNCATED, NO_IDS, BAD_TIMESTAMP = range(3)
MALFORMED_KIND_WEIGHTS = (0.7, 0.15, 0.15)
BAD_TIMESTAMPS = ("not a timestamp", "", "2024-02-30T25:61:00Z", "yesterday")
SENT_AT_SHARE = 0.9

MESSAGE_TYPES = ("track", "identify", "page", "screen")
TRACK, IDENTIFY, PAGE, SCREEN = range(4)
IDENTIFY_SHARE = 0.004
VIEW_SHARE = 0.44

EVENTS = (
    "Signed Up",
    "Feature Used",
    "Report Viewed",
    "Dashboard Created",
    "Invite Sent",
    "Order Completed",
)
SIGNED_UP, FEATURE_USED, REPORT_VIEWED, DASHBOARD_CREATED, INVITE_SENT, ORDER_COMPLETED = range(6)
# Track events other than sign-ups and orders, and how often each occurs.
IN_APP_EVENTS = (FEATURE_USED, REPORT_VIEWED, DASHBOARD_CREATED, INVITE_SENT)
IN_APP_EVENT_WEIGHTS = (0.45, 0.3, 0.13, 0.12)
FEATURES = ("export", "sql_editor", "alerts", "sharing", "api", "annotations")
REPORTS = ("retention", "funnel", "revenue", "cohorts", "activation")
SIGNUP_METHODS = ("email", "google", "github")

PAGES = ("Home", "Pricing", "Sign Up", "Dashboard", "Reports", "Settings", "Docs", "Billing")
PAGE_PATHS = (
    "/",
    "/pricing",
    "/signup",
    "/app",
    "/app/reports",
    "/app/settings",
    "/docs",
    "/billing",
)
LANDING_PAGE_WEIGHTS = (0.45, 0.35, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0)
APP_PAGE_WEIGHTS = (0.02, 0.03, 0.0, 0.4, 0.3, 0.1, 0.1, 0.05)
SITE_URL = "https://app.example.com"

PLANS = ("free", "pro", "team")
PLAN_WEIGHTS = (0.6, 0.3, 0.1)
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD")
# The last weight is for orders without a currency, which means USD.
CURRENCY_WEIGHTS = (0.5, 0.15, 0.1, 0.06, 0.07, 0.12)
JPY = CURRENCIES.index("JPY")
MEDIAN_ORDER_AMOUNT = 39.0
TOTAL_ONLY_SHARE = 0.1
ORDER_ID_SHARE = 0.7


@dataclass(frozen=True)
class _Zone:
    name: str
    offset_minutes: int
    weight: float

    @property
    def utc_offset(self) -> str:
        if self.offset_minutes == 0:
            return "Z"
        sign = "+" if self.offset_minutes > 0 else "-"
        hours, minutes = divmod(abs(self.offset_minutes), 60)
        return f"{sign}{hours:02d}:{minutes:02d}"


# Zones without daylight saving time, so one offset per user is the truth all year.
ZONES = (
    _Zone("UTC", 0, 0.10),
    _Zone("Africa/Lagos", 60, 0.08),
    _Zone("Africa/Johannesburg", 120, 0.10),
    _Zone("Asia/Kolkata", 330, 0.12),
    _Zone("Asia/Kathmandu", 345, 0.02),
    _Zone("Asia/Singapore", 480, 0.08),
    _Zone("Asia/Tokyo", 540, 0.08),
    _Zone("Australia/Brisbane", 600, 0.05),
    _Zone("America/Sao_Paulo", -180, 0.08),
    _Zone("America/Bogota", -300, 0.14),
    _Zone("America/Phoenix", -420, 0.11),
    _Zone("Pacific/Honolulu", -600, 0.04),
)

# Web users send page views, mobile users screen views; orders are sent by the backend.
LIBRARIES = (
    ("analytics.js", "next-1.70.0"),
    ("analytics-ios", "4.1.8"),
    ("analytics-android", "4.11.3"),
    ("analytics-python", "2.3.2"),
)
WEB, IOS, ANDROID, SERVER = range(4)
PLATFORM_WEIGHTS = (0.65, 0.2, 0.15)

# Relative volume by local hour of day, and by weekday (Monday first).
HOURLY_VOLUME = (
    *(0.12, 0.08, 0.05, 0.04, 0.04, 0.07, 0.18, 0.4, 0.75, 1.0, 1.1, 1.1),
    *(1.0, 1.05, 1.1, 1.05, 1.0, 0.9, 0.8, 0.75, 0.7, 0.55, 0.4, 0.25),
)
WEEKLY_VOLUME = (1.0, 1.05, 1.05, 1.0, 0.9, 0.5, 0.45)

EXISTING_USER_SHARE = 0.35
QUICK_CHURN_SHARE = 0.2
QUICK_CHURN_MEAN_DAYS = 2.0
MEAN_LIFETIME_DAYS = 60.0
BUYER_SHARE = 0.45
EXTRA_SESSIONS_PER_DAY = 0.6
MEDIAN_EVENTS_PER_SESSION = 6.0
EVENT_GAP_MS = 40 * SECOND_MS
PRE_SIGNUP_EXTRA_VIEWS = 1.5
ACTIVATION_SHARE = 0.7
# Activity this soon after signing up is replaced by the sign-up messages themselves.
SIGNUP_QUIET_MS = 2 * SECOND_MS
# Most orders placed before any Feature Used become one, so most buyers used a feature first.
ORPHAN_ORDER_FIX_SHARE = 0.85


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate`` wrote; the counts are exact, so tests and benches can check them."""

    files: list[Path]  # files written, sorted
    events: int  # distinct messages generated (before duplicates)
    lines: int  # lines written (events + duplicate lines + malformed lines)
    duplicates: int  # extra duplicate lines (same messageId re-delivered)
    late: int  # events written to a later day's file than their event date
    malformed: int  # malformed lines


def landing_file_name(day: dt.date) -> str:
    """The name of the landing file that holds the events delivered on ``day``."""
    return f"events-{day.isoformat()}.jsonl"


def generate(out_dir: Path, start: dt.date, days: int, users: int, seed: int) -> GenerateResult:
    """Write ``days`` daily landing files from ``start`` into ``out_dir`` for about ``users``."""
    if days < 1:
        raise ValueError(f"days={days}: generate at least 1 day")
    if users < 1:
        raise ValueError(f"users={users}: generate at least 1 user")
    if seed < 0:
        raise ValueError(f"seed={seed}: use a seed of 0 or more")
    rng = np.random.default_rng(seed)
    start_ms = _epoch_ms(start)
    population = _population(rng, start, days, users)
    stream = _Stream.concat([_activity(rng, population, start, days), _signups(rng, population)])
    in_window = (stream.instant_ms >= start_ms) & (stream.instant_ms < start_ms + days * DAY_MS)
    stream = stream.take(np.flatnonzero(in_window))
    stream = stream.take(np.argsort(stream.instant_ms, kind="stable"))
    _complete_funnel(rng, stream)
    delivery = _deliver(rng, stream, start_ms, days)
    table = _columns(rng, stream, population, delivery)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _write_files(table, delivery, out_dir, start, seed)
    malformed = int(delivery.malformed.size)
    duplicates = int(delivery.line_message.size - stream.size)
    return GenerateResult(
        files=files,
        events=stream.size - malformed,
        lines=int(delivery.line_message.size),
        duplicates=duplicates,
        late=int(delivery.late.size),
        malformed=malformed,
    )


@dataclass(frozen=True)
class _Users:
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
class _Stream:
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

    def take(self, index: Ints) -> _Stream:
        return _Stream(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence[_Stream]) -> _Stream:
        return _Stream(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Stream)}
        )


@dataclass(frozen=True)
class _Delivery:
    """Where each message goes: defects, delivery days, and the lines of every file in order."""

    malformed: Ints  # messages written as malformed lines
    malformed_kind: Ints  # per malformed message: index into MALFORMED_KIND_WEIGHTS
    late: Ints  # messages delivered after their UTC date
    sent_ms: Ints  # per message
    line_message: Ints  # per line, in file order: which message it writes
    day_counts: Ints  # lines per file


def _epoch_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY_MS


def _probabilities(weights: Sequence[float] | Floats) -> Floats:
    array = np.asarray(weights, dtype=np.float64)
    probabilities: Floats = array / array.sum()
    return probabilities


def _local_time_of_day(rng: np.random.Generator, size: int) -> Ints:
    """Milliseconds after local midnight, busier in the daytime."""
    hours = rng.choice(24, size=size, p=_probabilities(HOURLY_VOLUME))
    return hours * HOUR_MS + rng.integers(0, HOUR_MS, size=size)


def _within_groups(values: Floats, counts: Ints) -> Floats:
    """Running sum of ``values`` restarting at every group of ``counts`` consecutive rows."""
    total = np.cumsum(values)
    ends = np.cumsum(counts)
    before = np.concatenate([[0.0], total[ends[:-1] - 1]]) if counts.size else total[:0]
    within: Floats = total - np.repeat(before, counts)
    return within


def _population(rng: np.random.Generator, start: dt.date, days: int, users: int) -> _Users:
    zone = rng.choice(len(ZONES), size=users, p=_probabilities([z.weight for z in ZONES]))
    offset_ms = np.array([z.offset_minutes for z in ZONES], dtype=np.int64)[zone] * MINUTE_MS
    platform = rng.choice(len(PLATFORM_WEIGHTS), size=users, p=_probabilities(PLATFORM_WEIGHTS))
    is_new = rng.random(users) >= EXISTING_USER_SHARE
    weekdays = (start.weekday() + np.arange(days)) % 7
    signup_day = np.where(
        is_new,
        rng.choice(days, size=users, p=_probabilities(np.asarray(WEEKLY_VOLUME)[weekdays])),
        -rng.integers(1, 366, size=users),
    )
    local_ms = signup_day * DAY_MS + _local_time_of_day(rng, users)
    signup_ms = _epoch_ms(start) + local_ms - offset_ms
    quick = is_new & (rng.random(users) < QUICK_CHURN_SHARE)
    mean_life = np.where(quick, QUICK_CHURN_MEAN_DAYS, MEAN_LIFETIME_DAYS) * DAY_MS
    lifetime = rng.exponential(mean_life).astype(np.int64)
    churn_ms = np.maximum(signup_ms, _epoch_ms(start)) + lifetime
    buyer = rng.random(users) < BUYER_SHARE
    currency_choice = rng.choice(
        len(CURRENCY_WEIGHTS), size=users, p=_probabilities(CURRENCY_WEIGHTS)
    )
    return _Users(
        zone=zone,
        offset_ms=offset_ms,
        platform=platform,
        is_new=is_new,
        signup_ms=signup_ms,
        churn_ms=churn_ms,
        active_rate=rng.beta(2.0, 3.0, size=users),
        session_events=rng.lognormal(np.log(MEDIAN_EVENTS_PER_SESSION), 0.5, size=users),
        order_rate=np.where(buyer, rng.uniform(0.01, 0.08, size=users), 0.0),
        plan=rng.choice(len(PLANS), size=users, p=_probabilities(PLAN_WEIGHTS)),
        currency=np.where(currency_choice == len(CURRENCIES), -1, currency_choice),
    )


def _views(platform: Ints) -> Ints:
    return np.where(platform == WEB, PAGE, SCREEN)


def _activity(rng: np.random.Generator, users: _Users, start: dt.date, days: int) -> _Stream:
    """Sessions of in-app events on the local days each user is active."""
    start_ms = _epoch_ms(start)
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
        rng.choice(len(IN_APP_EVENTS), size=size, p=_probabilities(IN_APP_EVENT_WEIGHTS))
    ]
    is_order = rng.random(size) < users.order_rate[user]
    event = np.where(kind == TRACK, np.where(is_order, ORDER_COMPLETED, in_app), -1)
    app_page = rng.choice(len(PAGES), size=size, p=_probabilities(APP_PAGE_WEIGHTS))
    page = np.where((kind == PAGE) | (kind == SCREEN), app_page, -1)
    detail = np.where(
        event == FEATURE_USED,
        rng.integers(0, len(FEATURES), size=size),
        np.where(event == REPORT_VIEWED, rng.integers(0, len(REPORTS), size=size), -1),
    )
    stream = _Stream(
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


def _signups(rng: np.random.Generator, users: _Users) -> _Stream:
    """For each new user: anonymous views, Signed Up, identify, and often a first Feature Used."""
    new = np.flatnonzero(users.is_new)
    signup = users.signup_ms[new]

    views = 1 + rng.poisson(PRE_SIGNUP_EXTRA_VIEWS, size=new.size)
    viewer = np.repeat(new, views)
    before = _within_groups(rng.exponential(EVENT_GAP_MS, size=int(views.sum())), views)
    landing = rng.choice(len(PAGES), size=viewer.size, p=_probabilities(LANDING_PAGE_WEIGHTS))
    visits = _Stream(
        instant_ms=np.repeat(signup, views) - 1 - before.astype(np.int64),
        user=viewer,
        kind=_views(users.platform[viewer]),
        event=np.full(viewer.size, -1),
        page=landing,
        detail=np.full(viewer.size, -1),
        anonymous=np.ones(viewer.size, dtype=np.bool_),
    )
    none = np.full(new.size, -1)
    signed_up = _Stream(
        instant_ms=signup,
        user=new,
        kind=np.full(new.size, TRACK),
        event=np.full(new.size, SIGNED_UP),
        page=none,
        detail=rng.integers(0, len(SIGNUP_METHODS), size=new.size),
        anonymous=np.zeros(new.size, dtype=np.bool_),
    )
    identify = _Stream(
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
    activation = _Stream(
        instant_ms=users.signup_ms[activated] + delay,
        user=activated,
        kind=np.full(activated.size, TRACK),
        event=np.full(activated.size, FEATURE_USED),
        page=np.full(activated.size, -1),
        detail=rng.integers(0, len(FEATURES), size=activated.size),
        anonymous=np.zeros(activated.size, dtype=np.bool_),
    )
    return _Stream.concat([visits, signed_up, identify, activation])


def _complete_funnel(rng: np.random.Generator, stream: _Stream) -> None:
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


def _deliver(rng: np.random.Generator, stream: _Stream, start_ms: int, days: int) -> _Delivery:
    size = stream.size
    utc_day = (stream.instant_ms - start_ms) // DAY_MS
    # Damaging a sign-up would leave orders without one; the funnel tests rely on it.
    anchors = (stream.event == SIGNED_UP) | (stream.kind == IDENTIFY)
    malformed = _pick(rng, ~anchors, MALFORMED_SHARE, size)
    malformed_kind = rng.choice(
        len(MALFORMED_KIND_WEIGHTS), size=malformed.size, p=_probabilities(MALFORMED_KIND_WEIGHTS)
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
    return _Delivery(
        malformed=malformed,
        malformed_kind=malformed_kind,
        late=late,
        sent_ms=sent_ms,
        line_message=line_message[order],
        day_counts=np.bincount(line_day, minlength=days),
    )


def _dictionary(codes: Ints, values: Sequence[str], missing: Bools | None = None) -> pa.Array:
    """Strings as a dictionary array: ``values[code]``, null where ``missing`` or code < 0."""
    mask = codes < 0 if missing is None else missing | (codes < 0)
    indices = pa.array(np.where(mask, 0, codes).astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(values), type=pa.string()))


def _nullable(values: npt.NDArray[np.generic], present: Bools) -> pa.Array:
    return pa.array(values, mask=~present)


def _anonymous_ids(rng: np.random.Generator, users: int) -> list[str]:
    raw = rng.integers(0, 256, size=(users, 16), dtype=np.uint8)
    return [str(uuid.UUID(bytes=row.tobytes(), version=4)) for row in raw]


def _columns(
    rng: np.random.Generator, stream: _Stream, users: _Users, delivery: _Delivery
) -> pa.Table:
    """Every message as the columns the JSON is formatted from (see ``_FORMAT_SQL``)."""
    size = stream.size
    user = stream.user
    platform = users.platform[user]
    kind, event = stream.kind, stream.event
    is_order = event == ORDER_COMPLETED
    library = np.where(is_order, SERVER, platform)

    malformed_kind = np.full(size, -1)
    malformed_kind[delivery.malformed] = delivery.malformed_kind
    cut = rng.uniform(0.2, 0.9, size=size)
    bad_timestamp = np.where(
        malformed_kind == BAD_TIMESTAMP, rng.integers(0, len(BAD_TIMESTAMPS), size=size), -1
    )
    no_ids = malformed_kind == NO_IDS

    currency = users.currency[user]
    amount = np.round(rng.lognormal(np.log(MEDIAN_ORDER_AMOUNT), 0.8, size=size), 2)
    amount = np.where(currency == JPY, np.round(amount * 100.0), amount)
    total_only = rng.random(size) < TOTAL_ONLY_SHARE
    has_order_id = is_order & (rng.random(size) < ORDER_ID_SHARE)
    order_number = np.cumsum(has_order_id) - 1
    has_sent_at = rng.random(size) < SENT_AT_SHARE

    user_count = users.size
    user_ids = [f"user_{index:06d}" for index in range(user_count)]
    emails = [f"{user_id}@example.com" for user_id in user_ids]
    zone_offsets = [zone.utc_offset for zone in ZONES]
    no_code = np.full(size, -1)
    return pa.table(
        {
            "type": _dictionary(kind, MESSAGE_TYPES),
            "message_number": pa.array(np.arange(size)),
            "user_id": _dictionary(user, user_ids, stream.anonymous | no_ids),
            "anonymous_id": _dictionary(
                user, _anonymous_ids(rng, user_count), (library == SERVER) | no_ids
            ),
            "event": _dictionary(event, EVENTS),
            "name": _dictionary(stream.page, PAGES),
            "local_ms": pa.array(stream.instant_ms + users.offset_ms[user]),
            "utc_offset": _dictionary(users.zone[user], zone_offsets),
            "bad_timestamp": _dictionary(bad_timestamp, BAD_TIMESTAMPS),
            "sent_ms": _nullable(delivery.sent_ms, has_sent_at),
            "library": _dictionary(library, [name for name, _ in LIBRARIES]),
            "library_version": _dictionary(library, [version for _, version in LIBRARIES]),
            "timezone": _dictionary(users.zone[user], [z.name for z in ZONES], library == SERVER),
            "has_properties": pa.array((kind == TRACK) | (kind == PAGE)),
            "path": _dictionary(np.where(kind == PAGE, stream.page, -1), PAGE_PATHS),
            "feature": _dictionary(np.where(event == FEATURE_USED, stream.detail, -1), FEATURES),
            "report": _dictionary(np.where(event == REPORT_VIEWED, stream.detail, -1), REPORTS),
            "method": _dictionary(np.where(event == SIGNED_UP, stream.detail, -1), SIGNUP_METHODS),
            "plan": _dictionary(users.plan[user], PLANS, (event != SIGNED_UP) & (kind != IDENTIFY)),
            "email": _dictionary(np.where(kind == IDENTIFY, user, -1), emails),
            "order_number": _nullable(order_number, has_order_id),
            "revenue": _nullable(amount, is_order & ~total_only),
            "total": _nullable(amount, is_order & total_only),
            "currency": _dictionary(np.where(is_order, currency, no_code), CURRENCIES),
            "cut": _nullable(cut, malformed_kind == TRUNCATED),
        }
    )


# Formats the columns of ``_columns`` into one JSON line each, in table order. DuckDB escapes
# every value (``to_json``); ``concat_ws`` skips nulls, so keys without a value are left out.
# ``cut`` truncates a line to a fraction of its length.
_FORMAT_SQL = """
with messages as (
    select
        '{' || concat_ws(',',
            '"type":' || to_json("type"),
            '"messageId":' || to_json($message_prefix || message_number),
            '"userId":' || to_json(user_id),
            '"anonymousId":' || to_json(anonymous_id),
            '"event":' || to_json("event"),
            '"name":' || to_json("name"),
            '"timestamp":' || to_json(coalesce(
                bad_timestamp,
                strftime(make_timestamp(local_ms * 1000), '%Y-%m-%dT%H:%M:%S.%g') || utc_offset
            )),
            '"sentAt":' || to_json(
                strftime(make_timestamp(sent_ms * 1000), '%Y-%m-%dT%H:%M:%S.%gZ')
            ),
            '"context":{' || concat_ws(',',
                '"library":{"name":' || to_json(library)
                    || ',"version":' || to_json(library_version) || '}',
                '"timezone":' || to_json(timezone)
            ) || '}',
            case when has_properties then '"properties":{' || concat_ws(',',
                '"path":' || to_json(path),
                '"url":' || to_json($site_url || path),
                '"feature":' || to_json(feature),
                '"report":' || to_json(report),
                '"method":' || to_json(method),
                '"plan":' || to_json(plan),
                '"order_id":' || to_json($order_prefix || order_number),
                '"revenue":' || to_json(revenue),
                '"total":' || to_json(total),
                '"currency":' || to_json(currency)
            ) || '}' end,
            case when "type" = 'identify' then '"traits":{' || concat_ws(',',
                '"email":' || to_json(email),
                '"plan":' || to_json(plan)
            ) || '}' end
        ) || '}' as message,
        cut
    from day_lines
)

select
    case
        when cut is null then message
        else left(message, cast(floor(length(message) * cut) as bigint))
    end || chr(10) as line
from messages
"""


def _write_files(
    table: pa.Table, delivery: _Delivery, out_dir: Path, start: dt.date, seed: int
) -> list[Path]:
    bounds = np.concatenate([[0], np.cumsum(delivery.day_counts)])
    params = {
        "message_prefix": f"gen-{seed}-",
        "order_prefix": f"ord-{seed}-",
        "site_url": SITE_URL,
    }
    files = []
    with duckdb.connect() as con:
        for day in range(delivery.day_counts.size):
            rows = delivery.line_message[bounds[day] : bounds[day + 1]]
            con.register("day_lines", table.take(pa.array(rows)))
            lines = con.sql(_FORMAT_SQL, params=params).to_arrow_table().column("line")
            con.unregister("day_lines")
            path = out_dir / landing_file_name(start + dt.timedelta(days=day))
            _write_atomically(path, lines)
            files.append(path)
    return files


def _write_atomically(path: Path, lines: pa.ChunkedArray) -> None:
    """Write the lines' bytes to ``<path>.tmp``, then rename it, so readers see all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        for chunk in lines.chunks:
            _write_text(handle, chunk)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_text(handle: BinaryIO, strings: pa.Array) -> None:
    """Write a string array's characters as they sit in its data buffer: no Python per line."""
    if len(strings) == 0:
        return
    if pa.types.is_large_string(strings.type):
        offset_type: type[np.signedinteger[Any]] = np.int64
    elif pa.types.is_string(strings.type):
        offset_type = np.int32
    else:
        raise TypeError(f"expected strings, got {strings.type}")
    _, offsets_buffer, data = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)
    begin, end = offsets[strings.offset], offsets[strings.offset + len(strings)]
    handle.write(memoryview(data)[begin:end])
