"""Deliver a written report: by mail, or as a message to a chat webhook.

- Mail: a short text body and the report file attached, plain SMTP through a relay (no
  login, no TLS): the relay of the host or the office.
- Webhook: one HTTP POST of Slack-compatible JSON (``{"text": ..., "blocks": [...]}``, as a
  Slack incoming webhook takes it; a chat that knows no blocks shows the text): the report's
  name and days, the figures of its last row and the path of the written file.

The caller passes the relay, the addresses and the URL (``Settings.smtp_host`` and friends,
read from ``SLUICE_SMTP_HOST``, ``SLUICE_SMTP_PORT``, ``SLUICE_REPORT_EMAIL_TO``,
``SLUICE_REPORT_EMAIL_FROM``; ``Settings.report_webhook_url`` from
``SLUICE_REPORT_WEBHOOK_URL``).
"""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from serving.reports import Report, ReportResult, format_cell

WEBHOOK_TIMEOUT_SECONDS = 10.0
# Slack shows at most 10 fields in a section.
MAX_FIELDS = 10


class DeliveryError(RuntimeError):
    """The report could not be delivered; the message names the relay or webhook and the
    setting."""


def build_message(
    report: Report, path: Path, sender: str, recipients: Sequence[str]
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"Sluice report {report.name}: {path.stem}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(
        f"{report.description}\n\nThe report for the days up to {path.stem} is attached "
        f"({path.name}).\n"
    )
    subtype = "html" if path.suffix == ".html" else "csv"
    message.add_attachment(
        path.read_bytes(), maintype="text", subtype=subtype, filename=f"{report.name}-{path.name}"
    )
    return message


def send_report(
    report: Report, path: Path, host: str, port: int, sender: str, recipients: Sequence[str]
) -> None:
    if not host or not recipients:
        raise DeliveryError(
            "no SMTP relay or recipients: set SLUICE_SMTP_HOST (and SLUICE_SMTP_PORT) and "
            "SLUICE_REPORT_EMAIL_TO"
        )
    message = build_message(report, path, sender, recipients)
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        raise DeliveryError(
            f"could not mail {path.name} through {host}:{port} (SLUICE_SMTP_HOST, "
            f"SLUICE_SMTP_PORT): {error}"
        ) from None


def webhook_message(result: ReportResult, path: Path) -> dict[str, Any]:
    """Slack-compatible JSON: ``text`` for notifications and plain clients, ``blocks`` for
    the rich view. The figures are the last row's (the last day, for a daily report)."""
    report = result.report
    days = f"{result.start} .. {result.end}"
    figures = (
        [
            (column, format_cell(value, column in report.rates))
            for column, value in zip(result.columns, result.rows[-1], strict=True)
        ]
        if result.rows
        else []
    )
    summary = ", ".join(f"{column} {value}" for column, value in figures) or "no rows"
    if result.note:
        note = result.note if figures else result.note.split(": ", 1)[-1]
        summary += f" ({note[0].lower()}{note[1:]})"
    text = f"Sluice report {report.name}, {days}: {summary}. Written to {path}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"{report.name}: {days}"[:150]},
        },
    ]
    if report.description:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": report.description}})
    if figures:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{column}*\n{value}"}
                    for column, value in figures[:MAX_FIELDS]
                ],
            }
        )
    if result.note or not figures:
        note = result.note or "No rows."
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": note}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Written to `{path}` from the snapshot of run {result.version.run_id}",
                }
            ],
        }
    )
    return {"text": text, "blocks": blocks}


def webhook_host(url: str) -> str:
    """The URL without its path: a chat webhook's path is its secret, so errors omit it."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..."


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than 2xx: following it would turn the POST into a GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_webhook(
    result: ReportResult, path: Path, url: str, timeout: float = WEBHOOK_TIMEOUT_SECONDS
) -> None:
    """POST the report's message to ``url``; any answer other than 2xx is a DeliveryError."""
    if not url:
        raise DeliveryError("no webhook: set SLUICE_REPORT_WEBHOOK_URL")
    body = json.dumps(webhook_message(result, path), default=str).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "sluice"},
    )
    where = f"the webhook {webhook_host(url)} (SLUICE_REPORT_WEBHOOK_URL)"
    try:
        with urllib.request.build_opener(_NoRedirects).open(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as error:
        detail = error.read(200).decode("utf-8", "replace").strip()
        raise DeliveryError(
            f"could not post {path.name} of {result.report.name} to {where}: it answered "
            f"HTTP {error.code}{': ' + detail if detail else ''}"
        ) from None
    except TimeoutError:
        raise DeliveryError(
            f"could not post {path.name} of {result.report.name} to {where}: no answer in "
            f"{timeout:g} s"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            reason = f"no answer in {timeout:g} s"
        raise DeliveryError(
            f"could not post {path.name} of {result.report.name} to {where}: {reason}"
        ) from None
