{#- Whole days from start_date to end_date (both dates); negative when end_date is earlier. -#}
{% macro days_between(start_date, end_date) -%}
    {{ return(adapter.dispatch('days_between', 'sluice')(start_date, end_date)) }}
{%- endmacro %}


{% macro default__days_between(start_date, end_date) -%}
    {{ exceptions.raise_compiler_error(
        "days_between has no implementation for the " ~ target.type ~ " adapter; add "
        ~ target.type ~ "__days_between to macros/days_between.sql"
    ) }}
{%- endmacro %}


{% macro duckdb__days_between(start_date, end_date) -%}
    date_diff('day', {{ start_date }}, {{ end_date }})
{%- endmacro %}


{% macro spark__days_between(start_date, end_date) -%}
    datediff({{ end_date }}, {{ start_date }})
{%- endmacro %}
