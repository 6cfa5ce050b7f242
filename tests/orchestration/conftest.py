"""The alert tests reuse the chat webhook and SMTP server on 127.0.0.1 of the real-time alert
tests."""

from tests.realtime.test_alerts import smtp, webhook  # noqa: F401  (fixtures)
