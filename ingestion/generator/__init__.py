"""Synthetic product events in the Segment spec: the landing files for demos, tests and benches.

``generate`` writes what a product's tracking libraries would deliver, one JSON-lines file per
delivery day, ``events-YYYY-MM-DD.jsonl`` (see ``landing_file_name``). Each file is written
durably (``common.durable``: a temporary file beside it, fsynced, renamed, the folder
fsynced), so a file sensor never sees half a file.

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

The parameters (shares, weights, the product's events) are in ``params``, the users and
their messages are drawn in ``simulate``, and ``write`` formats and writes the files.

Reads nothing from the environment.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingestion.generator.simulate import simulate
from ingestion.generator.write import landing_file_name, message_columns, write_files

__all__ = ["GenerateResult", "generate", "landing_file_name"]


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate`` wrote; the counts are exact, so tests and benches can check them."""

    files: list[Path]  # files written, sorted
    events: int  # distinct messages generated (before duplicates)
    lines: int  # lines written (events + duplicate lines + malformed lines)
    duplicates: int  # extra duplicate lines (same messageId re-delivered)
    late: int  # events written to a later day's file than their event date
    malformed: int  # malformed lines


def generate(out_dir: Path, start: dt.date, days: int, users: int, seed: int) -> GenerateResult:
    """Write ``days`` daily landing files from ``start`` into ``out_dir`` for about ``users``."""
    if days < 1:
        raise ValueError(f"days={days}: generate at least 1 day")
    if users < 1:
        raise ValueError(f"users={users}: generate at least 1 user")
    if seed < 0:
        raise ValueError(f"seed={seed}: use a seed of 0 or more")
    rng = np.random.default_rng(seed)
    population, stream, delivery = simulate(rng, start, days, users)
    table = message_columns(rng, stream, population, delivery)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_files(table, delivery, out_dir, start, seed)
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
