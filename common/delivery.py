"""The transport every Sluice message goes out by: a mail through an SMTP relay, and a JSON
POST to a chat webhook. Saved reports (``serving.delivery``) and data alerts
(``realtime.alerts``) build their own messages and send them through these two functions, so
both fail the same way, with one ``DeliveryError`` that names the relay or the webhook and
the setting.

- Mail: plain SMTP through a relay (no login, no TLS): the relay of the host or the office
  (``SLUICE_SMTP_HOST``, ``SLUICE_SMTP_PORT``).
- Webhook: one HTTP POST of JSON (``SLUICE_REPORT_WEBHOOK_URL``). Redirects are not followed
  (they would turn the POST into a GET), and an error never shows the URL's path, which for a
  Slack incoming webhook is the secret.

Callers pass the relay, the addresses and the URL; this module reads no environment.
Standard library only: one POST and one SMTP conversation need no client library.
"""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

WEBHOOK_TIMEOUT_SECONDS = 10.0
SMTP_TIMEOUT_SECONDS = 30.0


class DeliveryError(RuntimeError):
    """A message could not be delivered; the message names the relay or webhook and the
    setting."""


def require_mail(host: str, recipients: Sequence[str]) -> None:
    """Raise a DeliveryError naming the settings when mail is not set up."""
    if not host or not recipients:
        raise DeliveryError(
            "no SMTP relay or recipients: set SLUICE_SMTP_HOST (and SLUICE_SMTP_PORT) and "
            "SLUICE_REPORT_EMAIL_TO"
        )


def send_mail(
    message: EmailMessage,
    host: str,
    port: int,
    what: str,
    timeout: float = SMTP_TIMEOUT_SECONDS,
) -> None:
    """Send ``message`` (its From and To set) through the relay; ``what`` names it in errors."""
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        raise DeliveryError(
            f"could not mail {what} through {host}:{port} (SLUICE_SMTP_HOST, "
            f"SLUICE_SMTP_PORT): {error}"
        ) from None


def webhook_host(url: str) -> str:
    """The URL without its path: a chat webhook's path is its secret, so errors omit it."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..."


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than 2xx: following it would turn the POST into a GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_json(
    url: str, body: dict[str, Any], what: str, timeout: float = WEBHOOK_TIMEOUT_SECONDS
) -> None:
    """POST ``body`` as JSON to ``url``; any answer other than 2xx, a refused connection or no
    answer within ``timeout`` is a DeliveryError. ``what`` names the message in errors."""
    if not url:
        raise DeliveryError("no webhook: set SLUICE_REPORT_WEBHOOK_URL")
    request = urllib.request.Request(
        url,
        data=json.dumps(body, default=str).encode(),
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
            f"could not post {what} to {where}: it answered "
            f"HTTP {error.code}{': ' + detail if detail else ''}"
        ) from None
    except TimeoutError:
        raise DeliveryError(
            f"could not post {what} to {where}: no answer in {timeout:g} s"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            reason = f"no answer in {timeout:g} s"
        raise DeliveryError(f"could not post {what} to {where}: {reason}") from None
