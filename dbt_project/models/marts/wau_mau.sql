{{
    config(
        meta={'partition_column': 'event_date', 'replaces_days_after': 27},
    )
}}

-- A day's wau and mau count the users active in the 7 and 28 days ending that day. So a run
-- reads fct_events from 27 days before its window, and replaces its window plus the 27 days
-- after it, whose counts include the window's days (a late event changes them too). The
-- cost follows the window: at most 27 + window + 27 days of fct_events.
with events as (
    select * from {{ ref('fct_events') }}
    where {{ in_partition_window('event_date', days_before=27, days_after=27) }}
),

-- One row per day with at least one event, like dau.
days as (
    select distinct event_date
    from events
    where {{ in_partition_window('event_date', days_after=27) }}
),

active_user_days as (
    select distinct
        event_date,
        user_key
    from events
    where is_active_event
),

counted as (
    select
        days.event_date,
        count(
            distinct case
                when active_user_days.event_date = days.event_date
                    then active_user_days.user_key
            end
        ) as dau,
        count(
            distinct case
                when active_user_days.event_date > days.event_date - interval 7 day
                    then active_user_days.user_key
            end
        ) as wau,
        count(distinct active_user_days.user_key) as mau
    from days
    left join active_user_days
        on
            days.event_date >= active_user_days.event_date
            and days.event_date - interval 28 day < active_user_days.event_date
    group by days.event_date
),

final as (
    select
        event_date,
        dau,
        wau,
        mau,
        cast(dau as double) / nullif(mau, 0) as stickiness
    from counted
)

select * from final
