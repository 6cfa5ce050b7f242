{{
    config(
        meta={'partition_column': 'event_date'},
    )
}}

-- Only the window's events, so that a run's cost follows the window, not the history.
with events as (
    select * from {{ ref('stg_events') }}
    where {{ in_partition_window('event_date') }}
),

-- A message delivered several times counts once: keep the copy that was loaded first.
deduplicated as (
    select *
    from events
    qualify row_number() over (
        partition by message_id
        order by loaded_at, source_file, line_number
    ) = 1
),

{% if is_incremental() %}
    -- Messages that earlier runs already counted on the days around the window.
    counted_nearby as (
        select message_id
        from {{ this }}
        where {{ near_partition_window('event_date') }}
    ),
{% endif %}

new_events as (
    select deduplicated.*
    from deduplicated
    {% if is_incremental() %}
        left join counted_nearby
            on deduplicated.message_id = counted_nearby.message_id
        where counted_nearby.message_id is null
    {% endif %}
),

final as (
    select
        message_id,
        event_type,
        event_name,
        user_key,
        user_id,
        anonymous_id,
        event_at,
        event_date,
        is_active_event,
        is_order,
        revenue,
        currency,
        revenue_usd,
        properties,
        traits,
        context,
        source_file,
        line_number,
        loaded_at,
        '{{ invocation_id }}' as dbt_invocation_id
    from new_events
)

-- In time order when the window spans several days, so that DuckDB's min/max zone maps let a
-- read of a few days (the marts, the next window run) skip the row groups of all other days.
select * from final
{{ window_order_by('event_at') }}
