"""Fake marts for the serving side's tests and benchmark: the marts' shape, made-up numbers.

What is served (the snapshot, reports, the query API, the dashboard) needs marts of the right
shape and size, not their logic (that is tested on real builds in tests/dbt_project and
tests/serving). The tables are created from the marts' enforced contracts
(``dbt_project/models/marts/_marts__models.yml``: each column's name, data_type and not_null
constraint), so the fake changes with the contract; the rows are inserted by column name, so
a fill that misses a not-null column or names one the contract lacks fails at once.

It lives in tests/ because it is test data: ``serving/`` is the package users install and
carries no fixtures. ``bench.serving`` imports it from here; the benchmarks run from a
checkout, as the tests do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml

from common.settings import DBT_PROJECT_DIR

CONTRACTS = DBT_PROJECT_DIR / "models" / "marts" / "_marts__models.yml"
SCHEMA = "marts"


@dataclass(frozen=True)
class FakeMarts:
    """``days`` days ending ``last``; on day i (0 is the first) ``base_users + users_per_day
    * i + users_wobble * (i % 50)`` users are active, and every other mart follows from that."""

    days: int
    last: dt.date
    base_users: int = 100
    users_per_day: int = 3
    users_wobble: int = 0
    event_names: int = 3
    cohort_users: int = 50
    retention_weeks: int = 4
    weekly_loss: int = 5  # retained users lost per week since first seen

    @property
    def first(self) -> dt.date:
        return self.last - dt.timedelta(days=self.days - 1)

    def rows(self) -> dict[str, str]:
        """A SELECT of each mart's rows, by column name; marts.dau first, the others read it."""
        cohort, loss = self.cohort_users, self.weekly_loss
        return {
            "dau": f"""
                select
                    date '{self.first}' + i::int as event_date,
                    {self.base_users} + {self.users_per_day} * i
                        + {self.users_wobble} * (i % 50) as active_users
                from range({self.days}) as days (i)""",
            "revenue_daily": """
                select
                    event_date,
                    active_users * 1.5 as revenue_usd,
                    active_users // 10 as orders,
                    active_users // 12 as paying_users
                from marts.dau""",
            "wau_mau": """
                select
                    event_date,
                    active_users as dau,
                    active_users * 3 as wau,
                    active_users * 6 as mau,
                    1 / 6 as stickiness
                from marts.dau""",
            "event_counts_daily": f"""
                select
                    event_date,
                    'track' as event_type,
                    'Event ' || n as event_name,
                    active_users * (n + 1) as events,
                    active_users // (n + 1) as users
                from marts.dau, range({self.event_names}) as names (n)""",
            "funnel_daily": """
                select
                    event_date,
                    active_users // 20 as signed_up,
                    active_users // 35 as used_feature_within_7d,
                    active_users // 90 as ordered_within_7d
                from marts.dau""",
            "retention_weekly": f"""
                select
                    cohort_week,
                    weeks as weeks_since_first_seen,
                    {cohort} as cohort_users,
                    {cohort} - {loss} * weeks as retained_users,
                    ({cohort} - {loss} * weeks) / {cohort} as retention_rate
                from
                    (select distinct date_trunc('week', event_date)::date as cohort_week
                    from marts.dau),
                    range({self.retention_weeks}) as w (weeks)""",
        }


def contract_ddl() -> dict[str, str]:
    """``create table marts.<model> (...)`` for each mart, from its enforced contract."""
    models = yaml.safe_load(CONTRACTS.read_text())["models"]
    statements = {}
    for model in models:
        columns = []
        for column in model["columns"]:
            not_null = any(c.get("type") == "not_null" for c in column.get("constraints", []))
            columns.append(
                f"{column['name']} {column['data_type']}{' not null' if not_null else ''}"
            )
        statements[model["name"]] = f"create table {SCHEMA}.{model['name']} ({', '.join(columns)})"
    return statements


def build_warehouse(path: Path, marts: FakeMarts) -> None:
    """A new warehouse file at ``path`` holding ``marts``."""
    ddl, rows = contract_ddl(), marts.rows()
    if set(ddl) != set(rows):
        raise ValueError(
            f"{CONTRACTS} declares the marts {sorted(ddl)}, but the fake fills {sorted(rows)}: "
            "add a SELECT for each new mart to FakeMarts.rows"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute(f"create schema {SCHEMA}")
        for name, select in rows.items():
            con.execute(ddl[name])
            con.execute(f"insert into {SCHEMA}.{name} by name {select}")
