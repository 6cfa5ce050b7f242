{#-
    The window of daily partitions that a run rebuilds (inclusive UTC dates, 'YYYY-MM-DD'):
    each bound is the var start_date / end_date when given (`dbt build --vars ...` by hand),
    else the environment variable SLUICE_WINDOW_START / SLUICE_WINDOW_END (what Sluice's runs
    set). A bound given neither way is open, so a plain `dbt build` rebuilds the whole history.

    Why two ways: dbt re-parses the whole project whenever the vars change, about a second per
    run. The environment is read only while dbt executes (`execute`), never while it parses,
    so dbt does not track these variables and keeps its partial parse across windows. During
    parsing the window is open, which changes nothing dbt records (the SQL is rendered again
    when the model runs).
-#}
{% macro partition_window() %}
    {%- set bounds = {} -%}
    {%- set labels = {} -%}
    {%- set environment = {'start_date': 'SLUICE_WINDOW_START', 'end_date': 'SLUICE_WINDOW_END'} -%}
    {%- for name in ['start_date', 'end_date'] -%}
        {%- set value = var(name, none) -%}
        {%- do labels.update({name: 'var ' ~ name}) -%}
        {%- if value is none and execute -%}
            {%- set value = env_var(environment[name], '') -%}
            {%- do labels.update({name: environment[name]}) -%}
        {%- endif -%}
        {%- set text = '' if value is none else (value | string | trim) -%}
        {%- if text == '' -%}
            {%- do bounds.update({name: none}) -%}
        {%- elif modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
            {%- do bounds.update({name: modules.datetime.date.fromisoformat(text)}) -%}
        {%- else -%}
            {{ exceptions.raise_compiler_error(
                labels[name] ~ "=" ~ text ~ " is not a date: pass YYYY-MM-DD, e.g. --vars "
                ~ "'{\"start_date\": \"2024-03-01\", \"end_date\": \"2024-03-01\"}'"
            ) }}
        {%- endif -%}
    {%- endfor -%}
    {%- if bounds['start_date'] is not none and bounds['end_date'] is not none
        and bounds['start_date'] > bounds['end_date'] -%}
        {{ exceptions.raise_compiler_error(
            labels['start_date'] ~ "=" ~ bounds['start_date'] ~ " is after "
            ~ labels['end_date'] ~ "=" ~ bounds['end_date']
            ~ ": both bounds are inclusive, so a single day is start_date = end_date"
        ) }}
    {%- endif -%}
    {{ return(bounds) }}
{% endmacro %}


{#-
    A predicate that keeps the rows of `column` (a date) inside the window, widened by
    `days_before` days before its start and `days_after` days after its end (for models whose
    rows depend on the events of nearby days, such as rolling counts and 7-day funnels).
-#}
{% macro in_partition_window(column, days_before=0, days_after=0) %}
    {%- set window = partition_window() -%}
    {%- set conditions = [] -%}
    {%- if window['start_date'] is not none -%}
        {%- set widen = modules.datetime.timedelta(days=days_before | int) -%}
        {%- set first = window['start_date'] - widen -%}
        {%- do conditions.append(column ~ " >= cast('" ~ first ~ "' as date)") -%}
    {%- endif -%}
    {%- if window['end_date'] is not none -%}
        {%- set widen = modules.datetime.timedelta(days=days_after | int) -%}
        {%- set last = window['end_date'] + widen -%}
        {%- do conditions.append(column ~ " <= cast('" ~ last ~ "' as date)") -%}
    {%- endif -%}
    {{- conditions | join(' and ') if conditions else 'true' -}}
{% endmacro %}


{#-
    A predicate that keeps the rows of `column` (a date) in the dedup_lookback_days just
    outside the window, on both sides: where an earlier run may already hold a copy of a
    message that this run sees again. False when the window is the whole history.
-#}
{% macro near_partition_window(column) %}
    {%- set window = partition_window() -%}
    {%- set lookback_text = var('dedup_lookback_days', 7) | string | trim -%}
    {%- if not modules.re.match('^[0-9]+$', lookback_text) -%}
        {{ exceptions.raise_compiler_error(
            "var dedup_lookback_days=" ~ lookback_text ~ " is not a whole number of days"
        ) }}
    {%- endif -%}
    {%- set lookback = modules.datetime.timedelta(days=lookback_text | int) -%}
    {%- set ranges = [] -%}
    {%- if window['start_date'] is not none -%}
        {%- do ranges.append(
            "(" ~ column ~ " >= cast('" ~ (window['start_date'] - lookback) ~ "' as date)"
            ~ " and " ~ column ~ " < cast('" ~ window['start_date'] ~ "' as date))"
        ) -%}
    {%- endif -%}
    {%- if window['end_date'] is not none -%}
        {%- do ranges.append(
            "(" ~ column ~ " > cast('" ~ window['end_date'] ~ "' as date)"
            ~ " and " ~ column ~ " <= cast('" ~ (window['end_date'] + lookback) ~ "' as date))"
        ) -%}
    {%- endif -%}
    {{- '(' ~ ranges | join(' or ') ~ ')' if ranges else 'false' -}}
{% endmacro %}


{#-
    `order by <columns>`, unless the window is a single day. A model ends with it to keep its
    table in time order for DuckDB's zone maps, so that a read of a few days skips the row
    groups of all other days. A one-day window's rows share their date and are appended
    together, so they are already grouped by day; sorting them would only cost memory (the
    window's whole rows, JSON columns included, held or spilled at once).
-#}
{% macro window_order_by(columns) %}
    {%- set window = partition_window() -%}
    {%- if window['start_date'] is none or window['start_date'] != window['end_date'] -%}
        order by {{ columns }}
    {%- endif -%}
{% endmacro %}
