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

    On Spark the model's table is partitioned by its partition column, and a run drops the
    window's partitions, then inserts the window's rows with dynamic partition overwrite: the
    same rows as on DuckDB, in whole-day files. Unlike DuckDB's delete and insert, the two
    statements are not one transaction: a run that fails between them leaves the window's
    days empty until it is run again (Dagster shows the partition failed).
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


{#-
    What a replace_window run replaces, for every engine: the model's partition column, the
    window's first and last day widened by the model's meta (none where the window is open),
    and the predicates of the rows it replaces and of the rows retention lets it rebuild.
-#}
{% macro replace_window_plan() -%}
    {%- set partition_column = config.meta_get('partition_column') -%}
    {%- if not partition_column -%}
        {{ exceptions.raise_compiler_error(
            "Model " ~ model.unique_id ~ " uses incremental_strategy='replace_window' but has no "
            ~ "meta.partition_column; set config(meta={'partition_column': '<date column>'})"
        ) }}
    {%- endif -%}
    {%- set days_before = config.meta_get('replaces_days_before') or 0 -%}
    {%- set days_after = config.meta_get('replaces_days_after') or 0 -%}
    {%- set window = partition_window() -%}
    {%- set first = none if window['start_date'] is none
        else window['start_date'] - modules.datetime.timedelta(days=days_before | int) -%}
    {%- set last = none if window['end_date'] is none
        else window['end_date'] + modules.datetime.timedelta(days=days_after | int) -%}
    {#- Days whose inputs retention dropped keep their rows as built (macros/retention.sql): a
        row reads the days_after days before it (wau_mau's 28-day count). -#}
    {%- do log_days_kept_by_retention(model.schema, days_after, first) -%}
    {{ return({
        'partition_column': partition_column,
        'first': first,
        'last': last,
        'replaced': in_partition_window(partition_column, days_before, days_after),
        'rebuildable': in_rebuildable_days(partition_column, model.schema, days_after),
        'rebuildable_from': rebuildable_from(model.schema, days_after),
    }) }}
{%- endmacro %}


{% macro duckdb__get_incremental_replace_window_sql(arg_dict) -%}
    {%- set plan = replace_window_plan() -%}
    {%- set replaced, rebuildable = plan['replaced'], plan['rebuildable'] -%}
    {%- set columns_csv = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}

    delete from {{ arg_dict['target_relation'] }}
    where {{ replaced }} and {{ rebuildable }};

    insert into {{ arg_dict['target_relation'] }} ({{ columns_csv }})
    select {{ columns_csv }}
    from {{ arg_dict['temp_relation'] }}
    where {{ replaced }} and {{ rebuildable }}
{%- endmacro %}


{#- Spark: dbt-spark's incremental materialization takes replace_window besides its own. -#}
{% macro dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format) %}
    {%- if raw_strategy == 'replace_window' -%}
        {%- if file_format != 'parquet' -%}
            {{ exceptions.raise_compiler_error(
                "replace_window on Spark needs file_format 'parquet' (model " ~ model.unique_id
                ~ " has '" ~ file_format ~ "')"
            ) }}
        {%- endif -%}
        {{ return(raw_strategy) }}
    {%- endif -%}
    {{ return(dbt_spark.dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format)) }}
{% endmacro %}


{% macro dbt_spark_get_incremental_sql(
    strategy, source, target, existing, unique_key, incremental_predicates
) %}
    {%- if strategy == 'replace_window' -%}
        {{ return(get_incremental_replace_window_sql({
            'temp_relation': source,
            'target_relation': target,
            'dest_columns': adapter.get_columns_in_relation(target),
        })) }}
    {%- endif -%}
    {{ return(dbt_spark.dbt_spark_get_incremental_sql(
        strategy, source, target, existing, unique_key, incremental_predicates
    )) }}
{% endmacro %}


{#- Spark: a table of a replace_window model is partitioned by its meta.partition_column. -#}
{% macro partition_cols(label, required=false) %}
    {%- set cols = config.get('partition_by', validator=validation.any[list, basestring]) -%}
    {%- if cols is none and config.get('incremental_strategy') == 'replace_window' -%}
        {%- set cols = config.meta_get('partition_column') -%}
    {%- endif -%}
    {%- if cols is not none -%}
        {%- if cols is string -%}
            {%- set cols = [cols] -%}
        {%- endif -%}
        {{ label }} (
        {%- for item in cols -%}
            {{ item }}
            {%- if not loop.last -%},{%- endif -%}
        {%- endfor -%}
        )
    {%- endif -%}
{% endmacro %}


{% macro spark__get_incremental_replace_window_sql(arg_dict) -%}
    {%- set plan = replace_window_plan() -%}
    {%- set partition_column = plan['partition_column'] -%}
    {%- set first, last, kept_from = plan['first'], plan['last'], plan['rebuildable_from'] -%}
    {%- set replaced, rebuildable = plan['replaced'], plan['rebuildable'] -%}
    {%- set target = arg_dict['target_relation'] -%}

    {#- The partitions the window replaces: Spark drops partitions by value only. -#}
    {%- set dropped = [] -%}
    {%- for row in run_query('show partitions ' ~ target) -%}
        {%- set day = modules.datetime.date.fromisoformat(row[0].split('=', 1)[1]) -%}
        {%- if (first is none or day >= first) and (last is none or day <= last)
            and (kept_from is none or day >= kept_from['day']) -%}
            {%- do dropped.append(
                "partition (" ~ partition_column ~ " = date'" ~ day ~ "')"
            ) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- for chunk in dropped | batch(200) -%}
        {%- do run_query(
            'alter table ' ~ target ~ ' drop if exists ' ~ chunk | join(', ')
        ) -%}
    {%- endfor -%}
    {%- do run_query('set spark.sql.sources.partitionOverwriteMode = dynamic') -%}

    {#- Partition columns come last in a Spark table, as in its column list. -#}
    {%- set columns_csv = arg_dict['dest_columns'] | map(attribute='quoted') | join(', ') -%}
    insert overwrite table {{ target }} partition ({{ partition_column }})
    select {{ columns_csv }}
    from {{ arg_dict['temp_relation'] }}
    where {{ replaced }} and {{ rebuildable }}
{%- endmacro %}
