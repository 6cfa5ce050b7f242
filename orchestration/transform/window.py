"""How Sluice runs dbt over a window of days: the command and the environment that Dagster's
dbt asset uses (and that the benchmarks price as Sluice's). Reads no environment.

- dbt unit tests check the models' logic against fixed rows, which a scheduled or backfill
  run does not change, and they cost as much as the models of a small day; so Sluice's runs
  leave them out. ``make test`` runs them, and so does an analyst's plain ``dbt build``.
- The window reaches dbt as the environment variables ``SLUICE_WINDOW_START`` and
  ``SLUICE_WINDOW_END`` (read by ``dbt_project/macros/partition_window.sql``), not as
  ``--vars``: dbt re-parses the whole project whenever its vars change, about a second of every
  run, but keeps its partial parse when only variables it reads while executing change.
"""

from __future__ import annotations

import datetime as dt

# `dbt build` for a window of days: models, seeds and data tests, no unit tests.
WINDOW_BUILD = ("build", "--exclude-resource-type", "unit_test")

WINDOW_START_ENV = "SLUICE_WINDOW_START"
WINDOW_END_ENV = "SLUICE_WINDOW_END"


def window_env(first: dt.date, last: dt.date) -> dict[str, str]:
    """The environment that makes a dbt run rebuild the days first..last (both included)."""
    if last < first:
        raise ValueError(f"the window's last day {last} is before its first day {first}")
    return {WINDOW_START_ENV: first.isoformat(), WINDOW_END_ENV: last.isoformat()}
