-- Weekly retention by the week a user was first active. A user's first week depends on the
-- whole history, and a cohort's retention changes whenever a later week gets activity, so
-- this mart is a table rebuilt on every run (see dbt_project.yml), not a window. It reads
-- user_active_weeks (one row per user and active week, kept incrementally) rather than every
-- event in fct_events, so its cost grows with users and weeks, not with events. Once retention
-- has dropped old weeks of user_active_weeks (keeping each user's first week, so cohorts stay
-- exact), the rows of those weeks cannot be counted again and are kept as they were built.
with user_weeks as (
    select
        user_key,
        activity_week
    from {{ ref('user_active_weeks') }}
),

cohorts as (
    select
        user_key,
        min(activity_week) as cohort_week
    from user_weeks
    group by user_key
),

cohort_sizes as (
    select
        cohort_week,
        count(*) as cohort_users
    from cohorts
    group by cohort_week
),

weeks as (
    select distinct activity_week
    from user_weeks
),

-- Every cohort against every later week with activity, so weeks nobody came back show 0.
cohort_weeks as (
    select
        cohort_sizes.cohort_week,
        cohort_sizes.cohort_users,
        weeks.activity_week
    from cohort_sizes
    inner join weeks
        on cohort_sizes.cohort_week <= weeks.activity_week
),

retained as (
    select
        cohorts.cohort_week,
        user_weeks.activity_week,
        count(*) as retained_users
    from cohorts
    inner join user_weeks
        on cohorts.user_key = user_weeks.user_key
    group by cohorts.cohort_week, user_weeks.activity_week
),

computed as (
    select
        cohort_weeks.cohort_week,
        cast(
            {{ days_between('cohort_weeks.cohort_week', 'cohort_weeks.activity_week') }} / 7
            as integer
        ) as weeks_since_first_seen,
        cohort_weeks.cohort_users,
        coalesce(retained.retained_users, 0) as retained_users,
        cast(coalesce(retained.retained_users, 0) as double)
        / cohort_weeks.cohort_users as retention_rate
    from cohort_weeks
    left join retained
        on
            cohort_weeks.cohort_week = retained.cohort_week
            and cohort_weeks.activity_week = retained.activity_week
    where {{ in_rebuildable_days('cohort_weeks.activity_week', 'marts') }}
),

-- The weeks before the first one that can be counted again, as they were built.
kept as (
    {{ rows_kept_by_retention(
        'marts',
        '7 * weeks_since_first_seen < ' ~ days_between('cohort_week', '{first_day}'),
        'computed',
    ) }}
),

final as (
    select * from computed
    union all
    select * from kept
)

select * from final
