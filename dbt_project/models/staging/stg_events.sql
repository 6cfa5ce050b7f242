with currency_rates as (
    select * from {{ ref('currency_rates') }}
),

-- Reads the source directly, without a `select *` import CTE: DuckDB turns a filter on
-- event_date into a zone-map filter on raw.events only when the cast sits right on the scan,
-- and that is what keeps a one-day run from reading the whole history.
renamed as (
    select
        message_id,
        type as event_type,
        case
            when type = 'track' then event
            when type in ('page', 'screen') then name
        end as event_name,
        user_id,
        anonymous_id,
        coalesce(user_id, anonymous_id) as user_key,
        {{ utc_timestamp('timestamp') }} as event_at,
        {{ raw_event_date('timestamp') }} as event_date,
        {{ utc_timestamp('sent_at') }} as sent_at,
        {{ utc_timestamp('received_at') }} as received_at,
        type in ('track', 'page', 'screen') as is_active_event,
        coalesce(type = 'track' and event = 'Order Completed', false) as is_order,
        properties,
        traits,
        context,
        _source_file as source_file,
        _line_number as line_number,
        {{ utc_timestamp('_loaded_at') }} as loaded_at
    from {{ source('raw', 'events') }}
),

-- Revenue is the order's revenue, else its total; a missing currency means US dollars.
priced as (
    select
        *,
        case
            when is_order
                then coalesce(
                    try_cast({{ json_get_text('properties', 'revenue') }} as double),
                    try_cast({{ json_get_text('properties', 'total') }} as double)
                )
        end as revenue,
        case
            when is_order
                then coalesce(
                    upper(nullif(trim({{ json_get_text('properties', 'currency') }}), '')),
                    'USD'
                )
        end as currency
    from renamed
),

-- An order without revenue is worth 0; an unknown currency leaves revenue_usd null.
converted as (
    select
        priced.*,
        case
            when priced.is_order
                then coalesce(priced.revenue, 0) * currency_rates.usd_per_unit
        end as revenue_usd
    from priced
    left join currency_rates
        on priced.currency = currency_rates.currency
),

final as (
    select
        message_id,
        event_type,
        event_name,
        user_id,
        anonymous_id,
        user_key,
        event_at,
        event_date,
        sent_at,
        received_at,
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
        loaded_at
    from converted
)

select * from final
