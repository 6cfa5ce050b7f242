{{
    config(
        meta={'partition_column': 'event_date'},
    )
}}

-- Only the window's days of fct_events: a day without events gets no rows (and loses its
-- old ones, because the window is replaced as a whole).
with events as (
    select * from {{ ref('fct_events') }}
    where {{ in_partition_window('event_date') }}
),

final as (
    select
        event_date,
        event_type,
        event_name,
        count(*) as events,
        -- `users` is a keyword to SQLFluff, but it is the column name the mart promises.
        count(distinct user_key) as users  -- noqa: RF04
    from events
    group by event_date, event_type, event_name
)

select * from final
