{#-
    Offset-aware timestamps (timestamp with time zone) as UTC wall-clock timestamps and UTC
    dates, the types every model downstream of staging uses.
-#}
{% macro utc_timestamp(column) -%}
    {{ return(adapter.dispatch('utc_timestamp', 'sluice')(column)) }}
{%- endmacro %}


{% macro utc_date(column) -%}
    {{ return(adapter.dispatch('utc_date', 'sluice')(column)) }}
{%- endmacro %}


{#-
    The UTC date of a raw event's `timestamp`, for stg_events: the column a window's filter
    must land on to read only the window's days of raw.events.
-#}
{% macro raw_event_date(column) -%}
    {{ return(adapter.dispatch('raw_event_date', 'sluice')(column)) }}
{%- endmacro %}


{#- Fails the run unless the session clock is UTC, which the conversions above rely on. -#}
{% macro assert_utc_session() -%}
    {{ return(adapter.dispatch('assert_utc_session', 'sluice')()) }}
{%- endmacro %}


{% macro default__utc_timestamp(column) -%}
    {{ exceptions.raise_compiler_error(
        "utc_timestamp has no implementation for the " ~ target.type ~ " adapter; add "
        ~ target.type ~ "__utc_timestamp to macros/utc_timestamp.sql"
    ) }}
{%- endmacro %}


{% macro default__utc_date(column) -%}
    {{ exceptions.raise_compiler_error(
        "utc_date has no implementation for the " ~ target.type ~ " adapter; add "
        ~ target.type ~ "__utc_date to macros/utc_timestamp.sql"
    ) }}
{%- endmacro %}


{% macro default__raw_event_date(column) -%}
    {{ utc_date(column) }}
{%- endmacro %}


{% macro default__assert_utc_session() -%}
    {{ return('') }}
{%- endmacro %}


{#-
    DuckDB converts timestamptz with the session time zone, which profiles.yml pins to UTC.
    A single plain cast (rather than timezone('UTC', ...)) lets DuckDB turn a filter on the
    result into a zone-map filter on the raw column, so a one-day run skips the row groups of
    other days instead of scanning the whole history.
-#}
{% macro duckdb__utc_timestamp(column) -%}
    cast({{ column }} as timestamp)
{%- endmacro %}


{% macro duckdb__utc_date(column) -%}
    cast({{ column }} as date)
{%- endmacro %}


{% macro duckdb__assert_utc_session() -%}
    {%- if execute -%}
        {%- set zone = run_query("select current_setting('TimeZone')").columns[0].values()[0] -%}
        {%- if zone != 'UTC' -%}
            {{ exceptions.raise_compiler_error(
                "The DuckDB session time zone is " ~ zone ~ ", but event dates are UTC dates. "
                ~ "Set `settings: {TimeZone: UTC}` in the profile (see dbt_project/profiles.yml)."
            ) }}
        {%- endif -%}
    {%- endif -%}
    {{ return('') }}
{%- endmacro %}


{#-
    Spark's timestamps are instants shown in the session time zone, which the cluster pins to
    UTC (common/spark.py): the lake's UTC-adjusted Parquet timestamps need no conversion.
-#}
{% macro spark__utc_timestamp(column) -%}
    cast({{ column }} as timestamp)
{%- endmacro %}


{% macro spark__utc_date(column) -%}
    to_date({{ column }})
{%- endmacro %}


{#-
    On the lake, raw.events is partitioned by event_date, the UTC date of `timestamp` that the
    loader computed (ingestion/landing/): reading the partition column itself lets Spark prune
    to the window's day folders.
-#}
{% macro spark__raw_event_date(column) -%}
    event_date
{%- endmacro %}


{% macro spark__assert_utc_session() -%}
    {%- if execute -%}
        {%- set zone = run_query("select current_timezone()").columns[0].values()[0] -%}
        {%- if zone != 'UTC' -%}
            {{ exceptions.raise_compiler_error(
                "The Spark session time zone is " ~ zone ~ ", but event dates are UTC dates. "
                ~ "Start the cluster with `sluice spark up`, which sets "
                ~ "spark.sql.session.timeZone=UTC."
            ) }}
        {%- endif -%}
    {%- endif -%}
    {{ return('') }}
{%- endmacro %}
