with rejected_events as (
    select * from {{ source('raw', 'rejected_events') }}
),

final as (
    select
        _source_file as source_file,
        _line_number as line_number,
        reason,
        raw_line,
        {{ utc_timestamp('_rejected_at') }} as rejected_at
    from rejected_events
)

select * from final
