{#- The text of a top-level field of a JSON column; null when the field is missing or null. -#}
{% macro json_get_text(json_column, field) -%}
    {{ return(adapter.dispatch('json_get_text', 'sluice')(json_column, field)) }}
{%- endmacro %}


{% macro default__json_get_text(json_column, field) -%}
    {{ exceptions.raise_compiler_error(
        "json_get_text has no implementation for the " ~ target.type ~ " adapter; add "
        ~ target.type ~ "__json_get_text to macros/json_get_text.sql"
    ) }}
{%- endmacro %}


{% macro duckdb__json_get_text(json_column, field) -%}
    json_extract_string({{ json_column }}, '$."{{ field }}"')
{%- endmacro %}


{#- Spark keeps JSON as text (the lake's Parquet strings); get_json_object gives a nested
    value as JSON text and a string without its quotes, as DuckDB's json_extract_string does. -#}
{% macro spark__json_get_text(json_column, field) -%}
    get_json_object({{ json_column }}, '$.{{ field }}')
{%- endmacro %}
