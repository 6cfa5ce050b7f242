"""A code location for the freshness alert test: one asset that must be materialized within the
hour, loaded by a real code server that Dagster's freshness daemon evaluates."""

import datetime as dt

import dagster as dg


@dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=1)))
def daily_orders() -> None:
    return None


defs = dg.Definitions(assets=[daily_orders])
