{#- Shown in Dagster as a check on marts/wau_mau (a singular test needs one asset). -#}
{{ config(meta={'dagster': {'ref': {'name': 'wau_mau'}}}) }}

-- Rules every row of the newer marts keeps, in the window (the whole history when no window
-- is given): dau <= wau <= mau and dau equal to marts.dau; funnel steps never grow; week 0 of
-- a retention cohort is the whole cohort. Returns the rows that break one.
with wau_mau as (
    select * from {{ ref('wau_mau') }}
    where {{ in_partition_window('event_date') }}
),

dau as (
    select * from {{ ref('dau') }}
    where {{ in_partition_window('event_date') }}
),

funnel_daily as (
    select * from {{ ref('funnel_daily') }}
    where {{ in_partition_window('event_date') }}
),

retention_weekly as (
    select * from {{ ref('retention_weekly') }}
),

rolling_broken as (
    select
        'wau_mau' as mart,
        cast(wau_mau.event_date as string) as row_key
    from wau_mau
    left join dau
        on wau_mau.event_date = dau.event_date
    where
        not (wau_mau.dau <= wau_mau.wau and wau_mau.wau <= wau_mau.mau)
        or wau_mau.dau is distinct from dau.active_users
),

funnel_broken as (
    select
        'funnel_daily' as mart,
        cast(event_date as string) as row_key
    from funnel_daily
    where not (ordered_within_7d <= used_feature_within_7d and used_feature_within_7d <= signed_up)
),

retention_broken as (
    select
        'retention_weekly' as mart,
        cast(cohort_week as string) as row_key
    from retention_weekly
    where
        retained_users > cohort_users
        or (weeks_since_first_seen = 0 and retained_users != cohort_users)
),

final as (
    select * from rolling_broken
    union all
    select * from funnel_broken
    union all
    select * from retention_broken
)

select * from final
