{#-
    Use the schema set in dbt_project.yml as is (staging, core, marts, reference), not dbt's
    default <target schema>_<custom schema>, so BI tools see stable names such as marts.dau.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
