"""Data alerts: rules over live figures, evaluated every few seconds inside ``sluice stream``,
delivered by chat webhook and mail, once per firing, with a resolved message and a cool-down.

Rules are YAML files in ``reports/alerts/`` (``common.settings.ALERTS_DIR``), beside the saved
reports; each holds ``rules:``, a list of::

    - name: orders_dropped              # unique over all files; letters, digits, _
      description: Fewer orders than usual.   # optional, shown in the message
      metric: orders                    # a name of METRICS (below)
      window_minutes: 5                 # the metric over the last N minutes (a windowed metric)
      below: 1                          # or above: N; a share metric takes 0.05 or "5%"
      for_minutes: 15                   # optional (0): how long it must hold before it fires
      cooldown_minutes: 30              # optional (30): no new firing this soon after resolving
      event: Signed Up                  # only with metric events: count this event only

A window is the last N UTC minutes up to and including the one under way (as ``GET
/v1/live``). A file that cannot be read, or a rule with a bad field, is reported with the
file, the rule and the field (``AlertRuleError`` messages) and left out; the other rules keep
working, and the files are read again at each evaluation, so a fix needs no restart.

Each evaluation reads each rule's metric and moves the rule's state (SQLite at
``Settings.alerts_state_path``): pending while the condition holds for less than
``for_minutes``, then firing; resolved when it no longer holds. A metric with no value (a
share of no lines, no heartbeat yet) leaves the state as it is. Each transition puts one
message in an outbox in the same transaction, and the outbox is delivered after it, to every
channel set up (``SLUICE_REPORT_WEBHOOK_URL``; ``SLUICE_SMTP_HOST`` with
``SLUICE_REPORT_EMAIL_TO``): a firing alert is delivered once, not at every evaluation, a
restart notifies nothing again, and a message a channel refused stays in the outbox for that
channel and is retried at the next evaluation (for up to a day). Nothing here raises into the
stream worker: ``run`` logs a failed evaluation and goes on.

Metric sources: ``METRICS`` maps a name to a ``Metric``, whose ``read`` gets the evaluation's
``Context`` (the time and the settings) and the rule. The real-time store's figures are here;
another source (the batch tier, the ingest API) is a ``Metric`` in a mapping that its caller,
in a layer that may import both, passes to ``AlertEngine`` (``{**METRICS, **others}``).

The outbox, its delivery and the message format are ``common.alerting``'s, shared with the
platform's alerts (failed runs and checks, stale assets, query budgets).

Hand-written state machine over the standard library's sqlite3 (as Prometheus' pending /
firing rules, with Alertmanager's once-per-firing and resolved notices): those servers are
not part of a laptop install, and the state is a row per rule. Settings:
``SLUICE_ALERT_INTERVAL_SECONDS``, the delivery settings above, ``SLUICE_DATA_DIR``
(``common.settings``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.alerting import FIRING, RESOLVED, Outbox, message
from common.alerting import at as _at
from common.settings import ALERTS_DIR, Settings
from realtime import read

DEFAULT_COOLDOWN_MINUTES = 30.0
MAX_WINDOW_MINUTES = 1440

_NAME = re.compile(r"^[a-z0-9_]+$")
_FIELDS = (
    "name",
    "description",
    "metric",
    "event",
    "window_minutes",
    "above",
    "below",
    "for_minutes",
    "cooldown_minutes",
)


class AlertRuleError(ValueError):
    """A rule file or rule that must be fixed; the message names the file, the rule and the
    field."""


# --- metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a metric is read at: the evaluation's time and the settings (the paths)."""

    now: dt.datetime
    settings: Settings


@dataclass(frozen=True)
class Metric:
    name: str
    # How messages name it: "orders", "the share of lines rejected".
    label: str
    read: Callable[[Context, Rule], float | None]
    windowed: bool = True
    # A share from 0 to 1: shown as a percentage; a threshold may be written "5%".
    share: bool = False
    unit: str = ""
    takes_event: bool = False


def _range(context: Context, rule: Rule) -> tuple[dt.datetime, dt.datetime]:
    """The rule's window: the last N minutes, the one under way included."""
    assert rule.window is not None
    now = context.now.astimezone(dt.UTC)
    end = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return end - rule.window, end


def _figures(context: Context, rule: Rule) -> read.Figures:
    return read.total(context.settings.realtime_store_path, *_range(context, rule))


def _events(context: Context, rule: Rule) -> float:
    figures = _figures(context, rule)
    if rule.event is None:
        return figures.events
    return figures.events_by_name.get(rule.event, 0)


def _share(part: str) -> Callable[[Context, Rule], float | None]:
    def share(context: Context, rule: Rule) -> float | None:
        counts = read.processed(context.settings.realtime_store_path, *_range(context, rule))
        return getattr(counts, part) / counts.lines if counts.lines else None

    return share


def _worker_silent_seconds(context: Context, rule: Rule) -> float | None:
    path = context.settings.realtime_store_path
    beat = read.heartbeat(path) if path.exists() else None
    return None if beat is None else max(0.0, context.now.timestamp() - beat)


METRICS: Mapping[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("events", "events", _events, takes_event=True),
        Metric("orders", "orders", lambda c, r: _figures(c, r).orders),
        Metric("revenue_usd", "revenue (USD)", lambda c, r: _figures(c, r).revenue_usd),
        Metric("active_users", "active users", lambda c, r: _figures(c, r).active_users),
        Metric(
            "rejected_share",
            "the share of lines rejected (invalid)",
            _share("invalid"),
            share=True,
        ),
        Metric("late_share", "the share of lines late", _share("late"), share=True),
        Metric(
            "worker_silent_seconds",
            "seconds since the stream worker's last step",
            _worker_silent_seconds,
            windowed=False,
            unit=" s",
        ),
    )
}


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    path: Path
    metric: Metric
    comparison: str  # "above" or "below"
    threshold: float
    window: dt.timedelta | None
    hold: dt.timedelta
    cooldown: dt.timedelta
    description: str = ""
    event: str | None = None

    def holds(self, value: float) -> bool:
        return value > self.threshold if self.comparison == "above" else value < self.threshold

    @property
    def what(self) -> str:
        """The metric and its window: "orders over the last 5 minutes"."""
        label = self.metric.label
        if self.event is not None:
            label = f"{self.event!r} events"
        if self.window is None:
            return label
        minutes = int(self.window.total_seconds() // 60)
        return f"{label} over the last {minutes} minute{'s' if minutes != 1 else ''}"

    def show(self, value: float) -> str:
        if self.metric.share:
            return f"{value:.1%}"
        if float(value).is_integer():
            return f"{value:,.0f}{self.metric.unit}"
        return f"{value:,.2f}{self.metric.unit}"

    @property
    def condition(self) -> str:
        """ "orders over the last 5 minutes below 1"."""
        held = f" for {_minutes(self.hold)}" if self.hold else ""
        return f"{self.what} {self.comparison} {self.show(self.threshold)}{held}"


def _minutes(span: dt.timedelta) -> str:
    minutes = span.total_seconds() / 60
    if minutes < 1:
        return f"{span.total_seconds():g} s"
    shown = f"{minutes:g}" if minutes != 1 else "1"
    return f"{shown} minute{'s' if minutes != 1 else ''}"


def _number(value: Any, *, share: bool = False) -> float | None:
    """A number of YAML (not a bool), or "5%" for a share; None otherwise."""
    if share and isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def parse_rule(data: Any, path: Path, index: int, metrics: Mapping[str, Metric]) -> Rule:
    """The ``index``-th (from 1) rule of ``path``, or an AlertRuleError naming the file, the
    rule and the field."""
    named = data.get("name") if isinstance(data, dict) else None
    label = repr(named) if isinstance(named, str) and named else f"number {index}"

    def fail(field: str, problem: str) -> AlertRuleError:
        return AlertRuleError(f"{path}: rule {label}: field {field!r} {problem}")

    if not isinstance(data, dict):
        raise AlertRuleError(f"{path}: rule {label} must be a mapping of fields (name, metric...)")
    unknown = sorted(str(key) for key in data if key not in _FIELDS)
    if unknown:
        raise fail(unknown[0], f"is not a field of a rule; the fields are {', '.join(_FIELDS)}")
    if not isinstance(named, str) or not _NAME.match(named):
        raise fail("name", "must be a name of lowercase letters, digits and _")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise fail("description", "must be text")
    metric_name = data.get("metric")
    metric = metrics.get(metric_name) if isinstance(metric_name, str) else None
    if metric is None:
        raise fail("metric", f"must be one of {', '.join(metrics)}, not {data.get('metric')!r}")
    event = data.get("event")
    if event is not None and (not metric.takes_event or not isinstance(event, str) or not event):
        raise fail("event", "must be an event name, and only with metric events")
    window: dt.timedelta | None = None
    if metric.windowed:
        minutes = data.get("window_minutes")
        if (
            isinstance(minutes, bool)
            or not isinstance(minutes, int)
            or not 1 <= minutes <= MAX_WINDOW_MINUTES
        ):
            raise fail(
                "window_minutes",
                f"must be a whole number of minutes from 1 to {MAX_WINDOW_MINUTES} (the metric "
                "is read over the last N minutes)",
            )
        window = dt.timedelta(minutes=minutes)
    elif "window_minutes" in data:
        raise fail("window_minutes", f"does not apply: {metric.name} is not read over a window")
    given = [key for key in ("above", "below") if key in data]
    if len(given) != 1:
        raise fail("above", "or 'below' (one of them) must give the threshold")
    comparison = given[0]
    threshold = _number(data[comparison], share=metric.share)
    if threshold is None:
        example = ' (a share: 0.05 or "5%")' if metric.share else ""
        raise fail(comparison, f"must be a number{example}")
    spans = {}
    for field, default in (("for_minutes", 0.0), ("cooldown_minutes", DEFAULT_COOLDOWN_MINUTES)):
        value = _number(data.get(field, default))
        if value is None or value < 0:
            raise fail(field, "must be a number of minutes, 0 or more")
        spans[field] = dt.timedelta(minutes=value)
    return Rule(
        name=named,
        path=path,
        metric=metric,
        comparison=comparison,
        threshold=threshold,
        window=window,
        hold=spans["for_minutes"],
        cooldown=spans["cooldown_minutes"],
        description=description.strip(),
        event=event,
    )


def load_rules(
    folder: Path, metrics: Mapping[str, Metric] = METRICS
) -> tuple[list[Rule], list[str]]:
    """The valid rules of every ``*.yml`` in ``folder``, and one error per file or rule left
    out (naming the file, the rule and the field)."""
    rules: list[Rule] = []
    errors: list[str] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            errors.append(f"{path}: cannot be read as YAML: {error}".replace("\n", " "))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            errors.append(f"{path}: must hold 'rules:', a list of alert rules")
            continue
        extra = sorted(str(key) for key in data if key != "rules")
        if extra:
            errors.append(f"{path}: field {extra[0]!r} is not known; a file holds only 'rules:'")
        for index, item in enumerate(data["rules"], 1):
            try:
                rule = parse_rule(item, path, index, metrics)
            except AlertRuleError as error:
                errors.append(str(error))
                continue
            if rule.name in seen:
                errors.append(
                    f"{path}: rule {rule.name!r}: field 'name' is also the name of a rule in "
                    f"{seen[rule.name]}; names must be unique"
                )
                continue
            seen[rule.name] = path
            rules.append(rule)
    return rules, errors


# --- state and messages -------------------------------------------------------------------

SCHEMA = """
create table if not exists rule_state (
    rule text primary key,
    pending_since real,  -- the condition has held since (seconds since the epoch); null: not
    firing_since real,   -- fired at; null: not firing
    resolved_at real,    -- last resolved; the cool-down runs from here
    value real,          -- the last value read
    evaluated_at real,
    notified_at real     -- when a message of the rule was last delivered (to every channel)
) without rowid;
"""


@dataclass(frozen=True)
class _State:
    pending_since: float | None = None
    firing_since: float | None = None
    resolved_at: float | None = None


def _message(rule: Rule, kind: str, value: float, since: float, now: float) -> dict[str, Any]:
    """Subject, plain text (mail body, webhook ``text``) and Slack-compatible blocks."""
    shown = rule.show(value)
    threshold = f"{rule.comparison} {rule.show(rule.threshold)}"
    if kind == FIRING:
        text = (
            f"Sluice alert {rule.name} is firing: {rule.what} is {shown}, {threshold}, "
            f"since {_at(since)}."
        )
        fields = [
            ("value", shown),
            ("threshold", threshold),
            ("window", _minutes(rule.window) if rule.window else "now"),
            ("since", _at(since)),
        ]
    else:
        lasted = _minutes(dt.timedelta(seconds=round(now - since)))
        text = (
            f"Sluice alert {rule.name} resolved: {rule.what} is {shown} (alert when "
            f"{threshold}); it fired at {_at(since)} and lasted {lasted}."
        )
        fields = [
            ("value", shown),
            ("threshold", threshold),
            ("fired at", _at(since)),
            ("resolved at", _at(now)),
        ]
    footer = f"Rule: {rule.condition} ({rule.path.name})."
    return message(rule.name, kind, text, fields, rule.description, footer)


@dataclass(frozen=True)
class RuleStatus:
    rule: Rule
    state: str  # not evaluated yet, ok, pending, firing, cooling down
    since: str | None
    value: str | None  # the last value read, as messages show it
    evaluated: str | None
    notified: str | None


class AlertEngine:
    """Evaluates the rule files of ``rules_dir`` against ``metrics`` and delivers the alerts
    through the settings' webhook and mail. ``log`` gets one line per transition, delivery
    and rule-file error."""

    def __init__(
        self,
        settings: Settings,
        rules_dir: Path = ALERTS_DIR,
        metrics: Mapping[str, Metric] = METRICS,
        log: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.rules_dir = rules_dir
        self.metrics = metrics
        self.log = log
        self.outbox = Outbox(settings, settings.alerts_state_path, log)
        # Errors already logged: a broken file is reported when it breaks, not every 15 s.
        self._reported: set[str] = set()
        # The same for a metric that cannot be read: logged when its error changes.
        self._read_errors: dict[str, str] = {}

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per evaluation: the engine runs in its own thread.
        with self.outbox.connect(SCHEMA) as con:
            yield con

    def channels(self) -> list[str]:
        """The channels set up in the settings."""
        return self.outbox.channels()

    def load(self) -> list[Rule]:
        """The valid rules; each new error is logged once."""
        rules, errors = load_rules(self.rules_dir, self.metrics)
        for error in errors:
            if error not in self._reported:
                self.log(f"alert rules: {error} (left out until fixed)")
        self._reported = set(errors)
        return rules

    def describe(self) -> str:
        """One line for the start of ``sluice stream``: the rules, how often, where to (and
        each broken rule or file is logged before it)."""
        rules = self.load()
        channels = self.channels()
        where = (
            f"delivered by {' and '.join(channels)}"
            if channels
            else "logged only (set SLUICE_REPORT_WEBHOOK_URL, or SLUICE_SMTP_HOST and "
            "SLUICE_REPORT_EMAIL_TO, to deliver them)"
        )
        names = ", ".join(rule.name for rule in rules) or "none"
        return (
            f"alerts: {len(rules)} rule{'s' if len(rules) != 1 else ''} of {self.rules_dir} "
            f"({names}) evaluated every {self.settings.alert_interval_seconds} s, {where}"
        )

    def status(self, now: dt.datetime | None = None) -> list[RuleStatus]:
        """Each valid rule with its state as the last evaluation left it (``sluice alerts``)."""
        at = (now or dt.datetime.now(dt.UTC)).timestamp()
        rules = self.load()
        rows: dict[str, tuple[Any, ...]] = {}
        if self.settings.alerts_state_path.exists():  # else nothing evaluated yet
            with self._connect() as con:
                rows = {
                    row[0]: row[1:]
                    for row in con.execute(
                        "select rule, pending_since, firing_since, resolved_at, value, "
                        "evaluated_at, notified_at from rule_state"
                    )
                }
        found = []
        for rule in rules:
            pending, firing, resolved, value, evaluated, notified = rows.get(rule.name, (None,) * 6)
            if firing is not None:
                state, since = FIRING, firing
            elif resolved is not None and at < resolved + rule.cooldown.total_seconds():
                state, since = "cooling down", resolved
            elif pending is not None:
                state, since = "pending", pending
            else:
                state, since = ("ok" if evaluated is not None else "not evaluated yet"), None
            found.append(
                RuleStatus(
                    rule=rule,
                    state=state,
                    since=None if since is None else _at(since),
                    value=None if value is None else rule.show(value),
                    evaluated=None if evaluated is None else _at(evaluated),
                    notified=None if notified is None else _at(notified),
                )
            )
        return found

    def evaluate(self, now: dt.datetime | None = None) -> None:
        """Read every rule's metric at ``now`` (default: the clock), move its state, and
        deliver what the outbox holds."""
        now = now or dt.datetime.now(dt.UTC)
        rules = self.load()
        with self._connect() as con:
            for rule in rules:
                try:
                    value = rule.metric.read(Context(now, self.settings), rule)
                except FileNotFoundError:
                    continue  # no store before the worker's first start
                except Exception as error:  # a metric source's bug must not stop the others
                    message = f"alert {rule.name}: could not read {rule.metric.name}: {error}"
                    if self._read_errors.get(rule.name) != message:
                        self.log(message)
                    self._read_errors[rule.name] = message
                    continue
                self._read_errors.pop(rule.name, None)
                self._step(con, rule, value, now.timestamp())
            self._deliver(con, now.timestamp())

    def _step(self, con: sqlite3.Connection, rule: Rule, value: float | None, now: float) -> None:
        con.execute("begin immediate")
        try:
            row = con.execute(
                "select pending_since, firing_since, resolved_at from rule_state where rule = ?",
                [rule.name],
            ).fetchone()
            state = _State(*row) if row else _State()
            if value is not None:
                state = self._transition(con, rule, state, value, now)
            con.execute(
                "insert into rule_state (rule, pending_since, firing_since, resolved_at, value, "
                "evaluated_at) values (?, ?, ?, ?, ?, ?) on conflict (rule) do update set "
                "pending_since = excluded.pending_since, firing_since = excluded.firing_since, "
                "resolved_at = excluded.resolved_at, value = excluded.value, "
                "evaluated_at = excluded.evaluated_at",
                [rule.name, state.pending_since, state.firing_since, state.resolved_at, value, now],
            )
        except BaseException:
            con.execute("rollback")
            raise
        con.execute("commit")

    def _transition(
        self, con: sqlite3.Connection, rule: Rule, state: _State, value: float, now: float
    ) -> _State:
        if not rule.holds(value):
            if state.firing_since is None:
                return _State(resolved_at=state.resolved_at)
            self._enqueue(
                con, rule, RESOLVED, _message(rule, RESOLVED, value, state.firing_since, now), now
            )
            return _State(resolved_at=now)
        pending = state.pending_since if state.pending_since is not None else now
        if state.firing_since is not None:
            return _State(pending, state.firing_since, state.resolved_at)
        held = now - pending >= rule.hold.total_seconds()
        cooling = (
            state.resolved_at is not None
            and now < state.resolved_at + rule.cooldown.total_seconds()
        )
        if not held or cooling:
            return _State(pending, None, state.resolved_at)
        self._enqueue(con, rule, FIRING, _message(rule, FIRING, value, pending, now), now)
        return _State(pending, now, state.resolved_at)

    def _enqueue(
        self, con: sqlite3.Connection, rule: Rule, kind: str, content: dict[str, Any], now: float
    ) -> None:
        self.outbox.enqueue(con, rule.name, kind, content, now)

    def _deliver(self, con: sqlite3.Connection, now: float) -> None:
        """Send what the outbox holds; a channel that fails is retried at the next
        evaluation."""
        for rule in self.outbox.deliver(con, now):
            con.execute("update rule_state set notified_at = ? where rule = ?", [now, rule])

    def run(self, stop: threading.Event, interval: float | None = None) -> None:
        """Evaluate every ``interval`` seconds (default ``SLUICE_ALERT_INTERVAL_SECONDS``)
        until ``stop`` is set, the first time one interval after the start (the worker has
        beaten by then); a failed evaluation is logged, never raised."""
        interval = interval or self.settings.alert_interval_seconds
        while not stop.wait(interval):
            try:
                self.evaluate()
            except Exception:
                self.log(
                    f"alerts: the evaluation failed; trying again in {interval:g} s\n"
                    + traceback.format_exc()
                )
