"""How Sluice runs dbt over a window of days: the command that Dagster's dbt asset runs (and
that the benchmarks price as Sluice's). Reads no environment.

dbt unit tests check the models' logic against fixed rows, which a scheduled or backfill
run does not change, and they cost as much as the models of a small day; so Sluice's runs
leave them out. ``make test`` runs them, and so does an analyst's plain ``dbt build``.
"""

from __future__ import annotations

# `dbt build` for a window of days: models, seeds and data tests, no unit tests.
WINDOW_BUILD = ("build", "--exclude-resource-type", "unit_test")
