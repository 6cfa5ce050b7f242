{#-
    Each value of `column_name` on a day of the run's window appears once among the rows of
    the window and of dedup_lookback_days on either side: the promise of fct_events, whose
    copies further apart than that are counted on both days by design. A one-day run reads
    about fifteen days, not the history; a run without a window checks the whole table.
-#}
{% test unique_near_window(model, column_name, date_column) %}

{%- set lookback = var('dedup_lookback_days', 7) | int %}

with window_values as (
    select distinct {{ column_name }} as unique_field
    from {{ model }}
    where {{ in_partition_window(date_column) }}
),

nearby_rows as (
    select {{ column_name }} as unique_field
    from {{ model }}
    where {{ in_partition_window(date_column, days_before=lookback, days_after=lookback) }}
),

final as (
    select
        nearby_rows.unique_field,
        count(*) as n_records
    from nearby_rows
    inner join window_values on nearby_rows.unique_field = window_values.unique_field
    group by nearby_rows.unique_field
    having count(*) > 1
)

select * from final

{% endtest %}
