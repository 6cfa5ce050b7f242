{#-
    Incremental strategy `replace_window`: a run owns the partition window given by the vars
    start_date and end_date (see partition_window.sql). It deletes every row of the target in
    the window, then inserts the rows the model computed for the window, so days that lost
    their events become empty and a rerun changes nothing.

    The model names its partition column (a date) in its meta:
        config(meta={'partition_column': 'event_date'})
    Rows the model returns outside the window are not inserted, because the window is all the
    run deletes.

    A model whose rows for other days depend on the window's events (a rolling 28-day count,
    a 7-day funnel) widens the window it replaces in its meta, by whole days:
        config(meta={'partition_column': 'event_date', 'replaces_days_after': 27})
    (or 'replaces_days_before'), and computes those days with in_partition_window(column,
    days_before, days_after). Rows are inserted in the order the model returns them (DuckDB's default
    preserve_insertion_order), so a model that ends with an `order by` keeps its table sorted
    for DuckDB's zone maps, on the first build and on every window run.

    Once Sluice's retention has dropped days, the rows that can no longer be computed again
    (their inputs are gone) are left out of both the delete and the insert, so they stay as they
    were built; see retention.sql.
-#}
{% macro get_incremental_replace_window_sql(arg_dict) -%}
    {{ return(adapter.dispatch('get_incremental_replace_window_sql', 'sluice')(arg_dict)) }}
{%- endmacro %}


{% macro default__get_incremental_replace_window_sql(arg_dict) -%}
    {{ exceptions.raise_compiler_error(
        "The replace_window incremental strategy has no implementation for the " ~ target.type
        ~ " adapter; add " ~ target.type ~ "__get_incremental_replace_window_sql to "
        ~ "macros/replace_window_strategy.sql"
    ) }}
{%- endmacro %}


{% macro duckdb__get_incremental_replace_window_sql(arg_dict) -%}
    {%- set partition_column = config.meta_get('partition_column') -%}
    {%- if not partition_column -%}
        {{ exceptions.raise_compiler_error(
            "Model " ~ model.unique_id ~ " uses incremental_strategy='replace_window' but has no "
            ~ "meta.partition_column; set config(meta={'partition_column': '<date column>'})"
        ) }}
    {%- endif -%}
    {%- set columns_csv = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    {%- set days_before = config.meta_get('replaces_days_before') or 0 -%}
    {%- set days_after = config.meta_get('replaces_days_after') or 0 -%}
    {%- set replaced = in_partition_window(partition_column, days_before, days_after) -%}
    {#- Days whose inputs retention dropped keep their rows as built (macros/retention.sql): a
        row reads the days_after days before it (wau_mau's 28-day count). -#}
    {%- set rebuildable = in_rebuildable_days(partition_column, model.schema, days_after) -%}
    {%- set window = partition_window() -%}
    {%- do log_days_kept_by_retention(
        model.schema,
        days_after,
        none if window['start_date'] is none
        else window['start_date'] - modules.datetime.timedelta(days=days_before | int),
    ) -%}

    delete from {{ arg_dict['target_relation'] }}
    where {{ replaced }} and {{ rebuildable }};

    insert into {{ arg_dict['target_relation'] }} ({{ columns_csv }})
    select {{ columns_csv }}
    from {{ arg_dict['temp_relation'] }}
    where {{ replaced }} and {{ rebuildable }}
{%- endmacro %}
