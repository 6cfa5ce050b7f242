"""The HTTP ingest API: Segment's Tracking API in front of the landing area.

Requests are checked (write key, limits, rate), each message is stamped (``receivedAt``,
clock-skew-corrected ``timestamp``, ``messageId``) and appended durably to a landing segment
under ``landing/sources/<source>/``; the dlt load picks closed segments up like any landing
file. The API never opens the warehouse. Modules: ``app`` (routes), ``messages`` (stamping and
the pre-check of the event contract), ``segments`` (durable appends with group commit),
``keys`` (write keys), ``ratelimit`` (token buckets), ``metrics`` (Prometheus text),
``server`` (uvicorn).
"""
