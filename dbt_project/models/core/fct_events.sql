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
-- Only the key columns of the window's events are grouped and ranked, and only for the few
-- messages seen more than once; the wide rows (JSON columns) then pass through a join with
-- the later copies. Ranking the wide rows themselves took most of the time of a range run.
-- The keys are read from stg_events, not from `events`: DuckDB would store the whole of a
-- CTE that is read twice, wide columns included.
event_keys as (
    select
        message_id,
        loaded_at,
        source_file,
        line_number
    from {{ ref('stg_events') }}
    where {{ in_partition_window('event_date') }}
),

repeated_messages as (
    select message_id
    from event_keys
    group by message_id
    having count(*) > 1
),

-- A line of one load (loaded_at, source_file, line_number) is one row of raw.events.
later_copies as (
    select
        event_keys.loaded_at,
        event_keys.source_file,
        event_keys.line_number
    from event_keys
    inner join repeated_messages
        on event_keys.message_id = repeated_messages.message_id
    qualify row_number() over (
        partition by event_keys.message_id
        order by event_keys.loaded_at, event_keys.source_file, event_keys.line_number
    ) > 1
),

deduplicated as (
    select events.*
    from events
    left join later_copies
        on
            events.loaded_at = later_copies.loaded_at
            and events.source_file = later_copies.source_file
            and events.line_number = later_copies.line_number
    where later_copies.line_number is null
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
