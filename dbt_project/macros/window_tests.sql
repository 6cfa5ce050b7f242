{#-
    Data tests of a partitioned model check the run's window, so that their cost follows the
    window, not the history. A test configured with
        config:
          where: "in_window(event_date)"
    reads the rows of the run's window (in_window(column, days_before) widens it, for models
    whose partitions are weeks); anything after the closing parenthesis is kept, as in
    "in_window(event_date) and is_order". A build without a window checks every row.

    dbt renders a test's `where` while it parses the project, when the window is not known
    (see partition_window.sql), so the text is left as written and this override of dbt's
    default__get_where_subquery turns it into the window's predicate when the test runs. Any
    other `where` works as in dbt.
-#}
{% macro default__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set window = modules.re.match(
        '^in_window\\(\\s*([A-Za-z_][A-Za-z0-9_]*)\\s*(?:,\\s*([0-9]+)\\s*)?\\)(.*)$', where or ''
    ) -%}
    {%- if window -%}
        {%- set where = in_partition_window(window.group(1), days_before=window.group(2) or 0)
            ~ window.group(3) -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
