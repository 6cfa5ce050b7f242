{#- Shown in Dagster as a check on marts/dau (dagster-dbt needs one asset for a singular test). -#}
{{ config(meta={'dagster': {'ref': {'name': 'dau'}}}) }}

-- The marts agree with fct_events on every day of the window (the whole history when no
-- window is given): one row per UTC day with events, and the same counts and revenue.
-- Returns the days where they differ.
-- Days that retention dropped from fct_events keep their marts as built: not compared.
with events as (
    select * from {{ ref('fct_events') }}
    where
        {{ in_partition_window('event_date') }}
        and {{ in_rebuildable_days('event_date', 'marts') }}
),

dau as (
    select * from {{ ref('dau') }}
    where
        {{ in_partition_window('event_date') }}
        and {{ in_rebuildable_days('event_date', 'marts') }}
),

revenue_daily as (
    select * from {{ ref('revenue_daily') }}
    where
        {{ in_partition_window('event_date') }}
        and {{ in_rebuildable_days('event_date', 'marts') }}
),

expected as (
    select
        event_date,
        count(distinct case when is_active_event then user_key end) as active_users,
        coalesce(sum(case when is_order then revenue_usd end), 0) as revenue_usd,
        count(case when is_order then message_id end) as orders,
        count(distinct case when is_order then user_key end) as paying_users
    from events
    group by event_date
),

days as (
    select event_date from expected
    union
    select event_date from dau
    union
    select event_date from revenue_daily
),

compared as (
    select
        days.event_date,
        expected.active_users as expected_active_users,
        dau.active_users,
        expected.revenue_usd as expected_revenue_usd,
        revenue_daily.revenue_usd,
        expected.orders as expected_orders,
        revenue_daily.orders,
        expected.paying_users as expected_paying_users,
        revenue_daily.paying_users
    from days
    left join expected
        on days.event_date = expected.event_date
    left join dau
        on days.event_date = dau.event_date
    left join revenue_daily
        on days.event_date = revenue_daily.event_date
),

final as (
    select *
    from compared
    where
        expected_active_users is distinct from active_users
        or expected_orders is distinct from orders
        or expected_paying_users is distinct from paying_users
        or expected_revenue_usd is null
        or revenue_usd is null
        or abs(expected_revenue_usd - revenue_usd) > 0.005
)

select * from final
