{{
    config(
        meta={'partition_column': 'event_date'},
    )
}}

-- Only the window's days of fct_events: a day without events gets no row (and loses its
-- old one, because the window is replaced as a whole).
with events as (
    select * from {{ ref('fct_events') }}
    where {{ in_partition_window('event_date') }}
),

final as (
    select
        event_date,
        count(distinct case when is_active_event then user_key end) as active_users
    from events
    group by event_date
)

select * from final
