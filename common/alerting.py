"""The one alert engine of Sluice: alert state, an outbox and its delivery, shared by every
part that raises alerts.

- ``Outbox``: the messages to deliver, in a SQLite file, delivered to every channel set up
  (``SLUICE_REPORT_WEBHOOK_URL``; ``SLUICE_SMTP_HOST`` with ``SLUICE_REPORT_EMAIL_TO``)
  through ``common.delivery``. A message a channel refused stays for that channel and is
  retried at the next delivery, for up to a day. A message is taken out of the file in a
  transaction of its own before it is sent, so two processes sharing the file (the Dagster
  daemon and ``sluice serve``) never send it twice; a message a process took and could not
  deliver goes back in.
- ``EventAlerts``: alerts that an event raises and another event resolves (a run failed and a
  run of the same job succeeded, a check failed and passed, an asset went stale and fresh
  again, a key overran its budget). One row per alert: raising an alert that is firing
  sends nothing again (it counts the repeat); raising it again within the cool-down after
  it resolved is recorded but sent only when a repeat comes after the cool-down; resolving
  sends one "resolved" message if the firing was sent.
- ``message``: the subject, plain text and Slack-compatible blocks every alert is sent as.

The data alerts of ``sluice stream`` (``realtime.alerts``) keep their own rule state and use
the outbox and the message format here; the alerts of the platform (``orchestration.alerts``,
``serving.budgets``) use ``EventAlerts`` on ``Settings.alerts_path``.

Hand-written over the standard library's sqlite3, as Alertmanager's once-per-firing, resolved
notices and repeat interval, because no alert server is part of a laptop install. Reads no
environment: the channels and the file come from ``Settings``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from common.delivery import DeliveryError, post_json, send_mail
from common.settings import Settings

WEBHOOK = "webhook"
MAIL = "mail"
FIRING = "firing"
RESOLVED = "resolved"
# An undelivered message older than this is dropped (and logged): news of a day ago is stale.
OUTBOX_MAX_AGE_SECONDS = 86400.0
NOT_DELIVERED = (
    " (not delivered: set SLUICE_REPORT_WEBHOOK_URL, or SLUICE_SMTP_HOST and "
    "SLUICE_REPORT_EMAIL_TO)"
)

OUTBOX_SCHEMA = """
create table if not exists outbox (
    id integer primary key,
    rule text not null,  -- the alert's name
    kind text not null,  -- firing or resolved
    created_at real not null,
    message text not null,  -- JSON: subject, text, body, webhook
    channels text not null  -- the channels still to deliver it to, comma-separated
);
"""


def at(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """ "45 s", "1 minute", "4 minutes", "3.5 hours"."""
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3 * 3600:
        minutes = seconds / 60
        return f"{minutes:g} minute{'s' if minutes != 1 else ''}"
    return f"{seconds / 3600:.3g} hours"


def message(
    name: str,
    kind: str,
    text: str,
    fields: Sequence[tuple[str, str]],
    description: str = "",
    footer: str = "",
) -> dict[str, Any]:
    """Subject, plain text (a webhook's ``text``), mail body and Slack-compatible blocks."""
    header = f"{kind.upper()}: {name}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
    ]
    if fields:
        blocks.append(
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{key}*\n{v}"} for key, v in fields],
            }
        )
    if description:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": description}]})
    body = text + (f"\n\n{description}" if description else "")
    body += f"\n\n{footer}\n" if footer else "\n"
    return {
        "subject": f"Sluice alert {name}: {kind}",
        "text": text,
        "body": body,
        "webhook": {"text": text, "blocks": blocks},
    }


class Outbox:
    """The messages of one state file and their delivery to the settings' channels; ``log``
    gets one line per message, delivery and failure."""

    def __init__(self, settings: Settings, path: Path, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.path = path
        self.log = log

    @contextlib.contextmanager
    def connect(self, schema: str = "") -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode with the outbox (and ``schema``) created."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, isolation_level=None)
        try:
            con.execute("pragma busy_timeout = 5000")
            con.executescript(OUTBOX_SCHEMA + schema)
            yield con
        finally:
            con.close()

    def channels(self) -> list[str]:
        """The channels set up in the settings."""
        settings = self.settings
        found = [WEBHOOK] if settings.report_webhook_url else []
        if settings.smtp_host and settings.report_email_to:
            found.append(MAIL)
        return found

    def enqueue(
        self, con: sqlite3.Connection, name: str, kind: str, content: dict[str, Any], now: float
    ) -> None:
        """Log the message and keep it for delivery (in the caller's transaction)."""
        channels = self.channels()
        self.log(content["text"] + ("" if channels else NOT_DELIVERED))
        if channels:
            con.execute(
                "insert into outbox (rule, kind, created_at, message, channels) "
                "values (?, ?, ?, ?, ?)",
                [name, kind, now, json.dumps(content), ",".join(channels)],
            )

    def _take(self, con: sqlite3.Connection, id_: int) -> tuple[Any, ...] | None:
        """The message ``id_``, taken out of the file; None if another process took it."""
        con.execute("begin immediate")
        try:
            row = con.execute(
                "select rule, kind, created_at, message, channels from outbox where id = ?",
                [id_],
            ).fetchone()
            con.execute("delete from outbox where id = ?", [id_])
        except BaseException:
            con.execute("rollback")
            raise
        con.execute("commit")
        return tuple(row) if row else None

    def deliver(self, con: sqlite3.Connection, now: float) -> list[str]:
        """Send what the outbox holds, oldest first; a channel that fails is left for the
        next delivery (and not tried again in this one). Returns the names of the alerts
        whose message went to every channel."""
        failed: set[str] = set()
        delivered: list[str] = []
        for (id_,) in con.execute("select id from outbox order by id").fetchall():
            taken = self._take(con, id_)
            if taken is None:
                continue
            name, kind, created_at, content, channels = taken
            left = [channel for channel in channels.split(",") if channel]
            if now - created_at > OUTBOX_MAX_AGE_SECONDS:
                self.log(
                    f"alert {name}: dropped the {kind} message of {at(created_at)}, "
                    f"undelivered for a day (to {', '.join(left)})"
                )
                continue
            loaded = json.loads(content)
            for channel in list(left):
                if channel in failed:
                    continue
                try:
                    self._send(channel, loaded, f"the {kind} alert {name}")
                except DeliveryError as error:
                    failed.add(channel)
                    self.log(f"alert {name}: {error}; retrying at the next evaluation")
                    continue
                left.remove(channel)
                self.log(f"alert {name}: {kind} message delivered by {channel}")
            if left:
                con.execute(
                    "insert into outbox (id, rule, kind, created_at, message, channels) "
                    "values (?, ?, ?, ?, ?, ?)",
                    [id_, name, kind, created_at, content, ",".join(left)],
                )
            else:
                delivered.append(name)
        return delivered

    def _send(self, channel: str, content: dict[str, Any], what: str) -> None:
        settings = self.settings
        if channel == WEBHOOK:
            post_json(settings.report_webhook_url, content["webhook"], what)
            return
        if not settings.smtp_host or not settings.report_email_to:
            raise DeliveryError(
                "no SMTP relay or recipients any more: set SLUICE_SMTP_HOST and "
                "SLUICE_REPORT_EMAIL_TO"
            )
        mail = EmailMessage()
        mail["Subject"] = content["subject"]
        mail["From"] = settings.report_email_from
        mail["To"] = ", ".join(settings.report_email_to)
        mail.set_content(content["body"])
        send_mail(mail, settings.smtp_host, settings.smtp_port, what)


EVENT_SCHEMA = """
create table if not exists alert_state (
    alert text primary key,
    firing_since real,    -- raised at (seconds since the epoch); null: not firing
    sent integer not null default 0,  -- 1: the firing message was sent (not held back)
    repeats integer not null default 0,  -- raised again while firing
    resolved_at real,     -- last resolved; the cool-down runs from here
    last_text text        -- what the last raise said
) without rowid;
"""


@dataclass(frozen=True)
class Raised:
    """What ``EventAlerts.raise_alert`` did: ``sent`` a firing message, or held it back as a
    repeat of a firing alert or within the cool-down."""

    sent: bool
    reason: str


class EventAlerts:
    """Alerts raised and resolved by events, with a cool-down, in the file ``path`` (default
    ``Settings.alerts_path``); delivered through ``Outbox``."""

    def __init__(
        self,
        settings: Settings,
        cooldown: dt.timedelta,
        path: Path | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.outbox = Outbox(settings, path or settings.alerts_path, log)
        self.cooldown = cooldown.total_seconds()
        self.log = log

    def _row(self, con: sqlite3.Connection, name: str) -> tuple[Any, ...]:
        row = con.execute(
            "select firing_since, sent, repeats, resolved_at from alert_state where alert = ?",
            [name],
        ).fetchone()
        return tuple(row) if row else (None, 0, 0, None)

    def raise_alert(
        self,
        name: str,
        text: str,
        fields: Sequence[tuple[str, str]] = (),
        description: str = "",
        now: float = 0.0,
    ) -> Raised:
        """Raise ``name`` with the sentence ``text`` ("Sluice run ... failed"), sending it
        unless it is firing already or resolved less than the cool-down ago."""
        with self.outbox.connect(EVENT_SCHEMA) as con:
            con.execute("begin immediate")
            try:
                firing_since, sent, _repeats, resolved_at = self._row(con, name)
                if firing_since is not None and sent:
                    outcome = Raised(False, f"firing since {at(firing_since)}")
                    held = True
                elif resolved_at is not None and now < resolved_at + self.cooldown:
                    outcome = Raised(False, f"cooling down since {at(resolved_at)}")
                    held = True
                else:
                    outcome = Raised(True, "sent")
                    held = False
                if held:
                    con.execute(
                        "insert into alert_state (alert, firing_since, sent, repeats, "
                        "resolved_at, last_text) values (?, ?, 0, 0, ?, ?) on conflict (alert) "
                        "do update set firing_since = coalesce(firing_since, excluded."
                        "firing_since), repeats = repeats + 1, last_text = excluded.last_text",
                        [name, now, resolved_at, text],
                    )
                    self.log(f"{text} (not sent again: alert {name} is {outcome.reason})")
                else:
                    content = message(name, FIRING, text, fields, description)
                    self.outbox.enqueue(con, name, FIRING, content, now)
                    con.execute(
                        "insert into alert_state (alert, firing_since, sent, repeats, "
                        "resolved_at, last_text) values (?, ?, 1, 0, ?, ?) on conflict (alert) "
                        "do update set firing_since = excluded.firing_since, sent = 1, "
                        "repeats = 0, last_text = excluded.last_text",
                        [name, now, resolved_at, text],
                    )
            except BaseException:
                con.execute("rollback")
                raise
            con.execute("commit")
            self.outbox.deliver(con, now)
        return outcome

    def resolve(
        self, name: str, text: str, fields: Sequence[tuple[str, str]] = (), now: float = 0.0
    ) -> bool:
        """Resolve ``name`` if it is firing; the "resolved" message (``text`` with how long it
        fired and how often it repeated) is sent if its firing was. True when it was firing."""
        with self.outbox.connect(EVENT_SCHEMA) as con:
            con.execute("begin immediate")
            try:
                firing_since, sent, repeats, _resolved = self._row(con, name)
                if firing_since is None:
                    con.execute("rollback")
                    return False
                con.execute(
                    "update alert_state set firing_since = null, sent = 0, repeats = 0, "
                    "resolved_at = ? where alert = ?",
                    [now, name],
                )
                again = f", raised {repeats + 1} times" if repeats else ""
                lasted = span(round(now - firing_since))
                full = f"{text} It fired at {at(firing_since)} and lasted {lasted}{again}."
                if sent:
                    extra = [("fired at", at(firing_since)), ("resolved at", at(now))]
                    content = message(name, RESOLVED, full, [*fields, *extra])
                    self.outbox.enqueue(con, name, RESOLVED, content, now)
                else:
                    self.log(f"{full} (its firing was held back: no resolved message)")
            except BaseException:
                con.execute("rollback")
                raise
            con.execute("commit")
            self.outbox.deliver(con, now)
        return True

    def deliver(self, now: float) -> None:
        """Retry what is left in the outbox."""
        with self.outbox.connect(EVENT_SCHEMA) as con:
            self.outbox.deliver(con, now)

    def firing(self) -> dict[str, str]:
        """The alerts firing now, with the last text each was raised with."""
        if not self.outbox.path.exists():
            return {}
        with self.outbox.connect(EVENT_SCHEMA) as con:
            return dict(
                con.execute(
                    "select alert, last_text from alert_state where firing_since is not null "
                    "order by alert"
                ).fetchall()
            )
