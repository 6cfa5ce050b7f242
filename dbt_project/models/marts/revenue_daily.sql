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
        cast(
            coalesce(sum(case when is_order then revenue_usd end), 0) as double
        ) as revenue_usd,
        count(case when is_order then message_id end) as orders,
        count(distinct case when is_order then user_key end) as paying_users
    from events
    group by event_date
)

select * from final
