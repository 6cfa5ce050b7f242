{{
    config(
        meta={'partition_column': 'event_date', 'replaces_days_before': 7},
    )
}}

-- The funnel Signed Up -> Feature Used -> Order Completed, by sign-up day (the cohort). A
-- user counts at a step when the step happened at or after the previous one and less than
-- 7 days (168 hours) after signing up. An event on day X can so change the cohorts of
-- X - 7 .. X: a run replaces its window plus the 7 days before it, reading fct_events from 7
-- days before to 7 days after the window. A cohort is final once its day + 7 is built.
with events as (
    select * from {{ ref('fct_events') }}
    where {{ in_partition_window('event_date', days_before=7, days_after=7) }}
),

-- A user who signs up twice on one day joins that day's cohort once, at the first sign-up.
sign_ups as (
    select
        event_date,
        user_key,
        min(event_at) as signed_up_at
    from events
    where
        event_name = 'Signed Up'
        and event_type = 'track'
        and {{ in_partition_window('event_date', days_before=7) }}
    group by event_date, user_key
),

features as (
    select
        user_key,
        event_at
    from events
    where event_name = 'Feature Used' and event_type = 'track'
),

orders as (
    select
        user_key,
        event_at
    from events
    where is_order
),

first_feature as (
    select
        sign_ups.event_date,
        sign_ups.user_key,
        sign_ups.signed_up_at,
        min(features.event_at) as used_feature_at
    from sign_ups
    left join features
        on
            sign_ups.user_key = features.user_key
            and sign_ups.signed_up_at <= features.event_at
            and sign_ups.signed_up_at + interval 7 day > features.event_at
    group by sign_ups.event_date, sign_ups.user_key, sign_ups.signed_up_at
),

outcomes as (
    select
        first_feature.event_date,
        first_feature.user_key,
        first_feature.used_feature_at is not null as has_used_feature,
        count(orders.event_at) > 0 as has_ordered
    from first_feature
    left join orders
        on
            first_feature.user_key = orders.user_key
            and first_feature.used_feature_at <= orders.event_at
            and first_feature.signed_up_at + interval 7 day > orders.event_at
    group by
        first_feature.event_date,
        first_feature.user_key,
        first_feature.used_feature_at
),

final as (
    select
        event_date,
        count(*) as signed_up,
        count(case when has_used_feature then user_key end) as used_feature_within_7d,
        count(case when has_ordered then user_key end) as ordered_within_7d
    from outcomes
    group by event_date
)

select * from final
