{#-
    The raw source tables where the engine does not hold them itself. On DuckDB, dlt loads
    raw.events and raw.rejected_events into the warehouse file: nothing to do. On Spark, dlt
    writes them as Parquet into the lake folder (SLUICE_LAKE_DIR; ingestion/pipeline.py):
    raw.events partitioned by event_date (the UTC date of `timestamp`), raw.rejected_events
    as plain files. Every run registers them as external tables (their columns as the files
    hold them) and picks up what the loads added since: new day folders and new files.
-#}
{% macro register_raw_sources() -%}
    {{ return(adapter.dispatch('register_raw_sources', 'sluice')()) }}
{%- endmacro %}


{% macro default__register_raw_sources() -%}
    {{ return('') }}
{%- endmacro %}


{% macro spark__register_raw_sources() -%}
    {%- if execute -%}
        {%- set lake = env_var('SLUICE_LAKE_DIR', '') | trim -%}
        {%- if lake == '' -%}
            {{ exceptions.raise_compiler_error(
                "SLUICE_LAKE_DIR is not set: on Spark, raw events are read from the lake folder "
                ~ "that dlt writes (<data dir>/lake). Run dbt through Sluice, or export "
                ~ "SLUICE_LAKE_DIR=<data dir>/lake"
            ) }}
        {%- endif -%}
        {%- set raw = source('raw', 'events').schema -%}
        {%- do run_query('create database if not exists ' ~ raw) -%}
        {%- do run_query(
            'create table if not exists ' ~ source('raw', 'events')
            ~ " using parquet location '" ~ lake ~ "/" ~ raw ~ "/events'"
        ) -%}
        {#- New day folders in, folders that retention removed out. -#}
        {%- do run_query('msck repair table ' ~ source('raw', 'events') ~ ' sync partitions') -%}
        {%- do run_query('refresh table ' ~ source('raw', 'events')) -%}
        {%- do run_query(
            'create table if not exists ' ~ source('raw', 'rejected_events')
            ~ " using parquet location '" ~ lake ~ "/" ~ raw ~ "/rejected_events'"
        ) -%}
        {%- do run_query('refresh table ' ~ source('raw', 'rejected_events')) -%}
    {%- endif -%}
    {{ return('') }}
{%- endmacro %}
