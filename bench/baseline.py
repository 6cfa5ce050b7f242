"""The baselines: plain DuckDB SQL over the same landing files, written independently of
Sluice's code (no import from ingestion/, dbt_project/ or orchestration/).

It implements docs/events.md on its own: the contract checks a valid line must pass, event
date = UTC date of ``timestamp``, user key = userId else anonymousId, active = track, page or
screen, an order is ``Order Completed`` with revenue = properties.revenue else .total in
properties.currency (default USD) at the seed's rates, and each messageId counts once.
One simplification, stated: a line without a messageId gets no id (the generator always
writes one), where Sluice derives ``sluice-<md5 of the line>``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb

from common.settings import DBT_PROJECT_DIR

RATES_CSV = DBT_PROJECT_DIR / "seeds" / "currency_rates.csv"

# Every line as typed columns; a line that is not valid JSON becomes a row of nulls, which
# the checks below reject like any other line without a type.
_READ = """
select *
from read_json(
    $files,
    format = 'newline_delimited',
    ignore_errors = true,
    filename = true,
    columns = {
        type: 'varchar', messageId: 'varchar', userId: 'varchar', anonymousId: 'varchar',
        event: 'varchar', name: 'varchar', timestamp: 'varchar', sentAt: 'varchar',
        receivedAt: 'varchar', properties: 'json', traits: 'json', context: 'json'
    }
)
"""

# The event contract of docs/events.md, as one filter.
_VALID = f"""
select
    messageId as message_id,
    type,
    event,
    name,
    coalesce(nullif(userId, ''), nullif(anonymousId, '')) as user_key,
    nullif(userId, '') as user_id,
    nullif(anonymousId, '') as anonymous_id,
    try_cast(timestamp as timestamptz) as timestamp,
    try_cast(sentAt as timestamptz) as sent_at,
    try_cast(receivedAt as timestamptz) as received_at,
    properties,
    traits,
    context,
    filename
from ({_READ})
where type in ('track', 'identify', 'page', 'screen', 'group', 'alias')
    and coalesce(nullif(userId, ''), nullif(anonymousId, '')) is not null
    and coalesce(length(messageId), 0) <= 100
    and (type <> 'track' or coalesce(event, '') <> '')
    and try_cast(timestamp as timestamptz) is not null
    and (sentAt is null or try_cast(sentAt as timestamptz) is not null)
    and (receivedAt is null or try_cast(receivedAt as timestamptz) is not null)
    and coalesce(json_type(properties), 'OBJECT') in ('OBJECT', 'NULL')
    and coalesce(json_type(traits), 'OBJECT') in ('OBJECT', 'NULL')
    and coalesce(json_type(context), 'OBJECT') in ('OBJECT', 'NULL')
"""

LOAD_SQL = f"create table raw_events as {_VALID}"

MARTS_SQL = f"""
create table rates as select * from read_csv($rates, header = true);

create table messages as
select *, cast(timestamp as date) as event_date
from ({_VALID})
qualify row_number() over (partition by message_id order by filename) = 1;

create schema marts;

create table marts.dau as
select
    event_date,
    count(distinct user_key) filter (where type in ('track', 'page', 'screen')) as active_users
from messages
group by event_date;

create table marts.revenue_daily as
with orders as (
    select
        event_date,
        user_key,
        coalesce(
            try_cast(properties ->> 'revenue' as double),
            try_cast(properties ->> 'total' as double),
            0
        ) as amount,
        coalesce(nullif(upper(trim(properties ->> 'currency')), ''), 'USD') as currency
    from messages
    where type = 'track' and event = 'Order Completed'
),

days as (select distinct event_date from messages)

select
    days.event_date,
    coalesce(sum(orders.amount * rates.usd_per_unit), 0) as revenue_usd,
    count(orders.user_key) as orders,
    count(distinct orders.user_key) as paying_users
from days
left join orders on days.event_date = orders.event_date
left join rates on orders.currency = rates.currency
group by days.event_date;
"""

DAU_QUERY = "select event_date, active_users from marts.dau order by event_date"
REVENUE_QUERY = (
    "select event_date, revenue_usd, orders, paying_users "
    "from marts.revenue_daily order by event_date"
)
# The same id summary for both sides: rows, distinct ids, and an order-free checksum.
IDS_SUMMARY = (
    "select count(*), count(distinct {column}), cast(sum(hash({column})) as varchar) from {table}"
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _script(sql: str, files: list[str]) -> list[str]:
    """The statements of ``sql`` with the file list and the rates file written in."""
    file_list = "[" + ", ".join(_literal(f) for f in files) + "]"
    sql = sql.replace("$files", file_list).replace("$rates", _literal(str(RATES_CSV)))
    return [statement for statement in sql.split(";") if statement.strip()]


def _connect(database: Path) -> duckdb.DuckDBPyConnection:
    database.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(database))
    con.execute("set TimeZone = 'UTC'")
    return con


def load(files: list[str], database: Path) -> dict[str, Any]:
    """``INSERT ... SELECT FROM read_json`` of the landing files into a fresh database."""
    con = _connect(database)
    try:
        started = time.perf_counter()
        for statement in _script(LOAD_SQL, files):
            con.execute(statement)
        con.execute("checkpoint")
        seconds = time.perf_counter() - started
    finally:
        con.close()
    # The output check (IDS_SUMMARY) runs in a process of its own: bench/load.py.
    return {"seconds": seconds}


def marts(files: list[str], database: Path) -> dict[str, Any]:
    """The marts dau and revenue_daily straight from the landing files."""
    con = _connect(database)
    try:
        started = time.perf_counter()
        for statement in _script(MARTS_SQL, files):
            con.execute(statement)
        con.execute("checkpoint")
        seconds = time.perf_counter() - started
    finally:
        con.close()
    return {"seconds": seconds}
