"""Mail a written report: a short text body and the report file attached.

Plain SMTP through a relay (no login, no TLS): the relay of the host or the office. The
caller passes the relay and the addresses (``Settings.smtp_host`` and friends, read from
``SLUICE_SMTP_HOST``, ``SLUICE_SMTP_PORT``, ``SLUICE_REPORT_EMAIL_TO`` and
``SLUICE_REPORT_EMAIL_FROM``).
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from serving.reports import Report


class DeliveryError(RuntimeError):
    """The report could not be mailed; the message names the relay and the setting."""


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
