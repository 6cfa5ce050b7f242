{{
    config(
        meta={'partition_column': 'activity_week', 'replaces_days_before': 6},
    )
}}

-- One row per user and week (weeks start on Monday, UTC) with an active event: all that
-- retention_weekly needs from fct_events, kept narrow and incremental so that the mart reads
-- one row per user and week instead of every event of the history on every run. A run
-- replaces the weeks that overlap its window (those starting up to 6 days before its first
-- day, through its last day) and computes each from all seven of its days.
with events as (
    select
        user_key,
        event_date
    from {{ ref('fct_events') }}
    where is_active_event and {{ in_partition_window('event_date', days_before=6, days_after=6) }}
),

user_weeks as (
    select distinct
        cast(date_trunc('week', event_date) as date) as activity_week,
        user_key
    from events
)

select * from user_weeks
where {{ in_partition_window('activity_week', days_before=6) }}
order by activity_week, user_key
