"""Deliver a written report: by mail, or as a message to a chat webhook.

- Mail: a short text body and the report file attached, plain SMTP through a relay (no
  login, no TLS): the relay of the host or the office.
- Webhook: one HTTP POST of Slack-compatible JSON (``{"text": ..., "blocks": [...]}``, as a
  Slack incoming webhook takes it; a chat that knows no blocks shows the text): the report's
  name and days, the figures of its last row and the path of the written file.

The caller passes the relay, the addresses and the URL (``Settings.smtp_host`` and friends,
read from ``SLUICE_SMTP_HOST``, ``SLUICE_SMTP_PORT``, ``SLUICE_REPORT_EMAIL_TO``,
``SLUICE_REPORT_EMAIL_FROM``; ``Settings.report_webhook_url`` from
``SLUICE_REPORT_WEBHOOK_URL``). The transport (SMTP, the POST, ``DeliveryError``) is
``common.delivery``, shared with the data alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from common.delivery import (
    WEBHOOK_TIMEOUT_SECONDS,
    DeliveryError,
    post_json,
    require_mail,
    send_mail,
    webhook_host,
)
from serving.reports import Report, ReportResult, format_cell

# Callers of this module import the transport's error and helpers from here too.
__all__ = [
    "WEBHOOK_TIMEOUT_SECONDS",
    "DeliveryError",
    "build_message",
    "post_webhook",
    "send_report",
    "webhook_host",
    "webhook_message",
]

# Slack shows at most 10 fields in a section.
MAX_FIELDS = 10


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
    require_mail(host, recipients)
    send_mail(build_message(report, path, sender, recipients), host, port, path.name)


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


def post_webhook(
    result: ReportResult, path: Path, url: str, timeout: float = WEBHOOK_TIMEOUT_SECONDS
) -> None:
    """POST the report's message to ``url``; any answer other than 2xx is a DeliveryError."""
    what = f"{path.name} of {result.report.name}"
    post_json(url, webhook_message(result, path), what, timeout)
