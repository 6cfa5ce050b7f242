{#-
    Retention. Sluice's `retention` job drops whole days past each layer's horizon (raw, core,
    marts) and records the first day each layer still holds in
    sluice_meta.retention_horizons (layer, dropped_before, setting). A row whose inputs were
    dropped can no longer be computed again, so the models keep it as it was built:

    - replace_window replaces only the rows from rebuildable_from(layer, days) on, so a window
      that reaches before it (or a plain `dbt build` of the whole history) leaves the older
      rows of facts and marts as they are, and logs that it did;
    - retention_weekly, rebuilt whole, keeps its rows of the weeks before it (rows_kept_by_retention);
    - `--full-refresh` would rebuild facts and marts from what retention kept, so
      refuse_full_refresh_after_retention stops it.

    A model of core is built from raw and core, a mart from core and the marts: the first day it
    can rebuild is the latest horizon of those layers, plus the days before a row that the row
    reads (a model's meta.replaces_days_after: wau_mau's 27). Without the table (no retention
    yet) every day can be rebuilt, and the SQL is the same as without retention.
-#}
{% macro retention_horizons() %}
    {%- set horizons = {} -%}
    {%- if execute -%}
        {%- set relation = adapter.get_relation(
            database=target.database, schema='sluice_meta', identifier='retention_horizons'
        ) -%}
        {%- if relation is not none -%}
            {%- set rows = run_query(
                'select layer, cast(dropped_before as string), setting from ' ~ relation
            ) -%}
            {%- for row in rows -%}
                {%- do horizons.update({row[0]: {
                    'layer': row[0],
                    'day': modules.datetime.date.fromisoformat(row[1]),
                    'setting': row[2],
                }}) -%}
            {%- endfor -%}
        {%- endif -%}
    {%- endif -%}
    {{ return(horizons) }}
{% endmacro %}


{#- The first day a model of `layer` can rebuild (a dict: day, layer, setting), or none. -#}
{% macro rebuildable_from(layer, days_before=0) %}
    {%- set built_from = {'core': ['raw', 'core'], 'marts': ['core', 'marts']} -%}
    {%- set horizons = retention_horizons() -%}
    {%- set latest = [] -%}
    {%- for name in built_from.get(layer, []) if name in horizons -%}
        {%- if not latest or horizons[name]['day'] > latest[0]['day'] -%}
            {%- do latest.clear() -%}
            {%- do latest.append(horizons[name]) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if not latest -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set first = latest[0]['day'] + modules.datetime.timedelta(days=days_before | int) -%}
    {{ return({'day': first, 'layer': latest[0]['layer'], 'setting': latest[0]['setting']}) }}
{% endmacro %}


{#- A predicate keeping the rows of `column` (a date) that a model of `layer` can rebuild. -#}
{% macro in_rebuildable_days(column, layer, days_before=0) %}
    {%- set first = rebuildable_from(layer, days_before) -%}
    {{- 'true' if first is none else column ~ " >= cast('" ~ first['day'] ~ "' as date)" -}}
{% endmacro %}


{#-
    The rows of this model that retention has made impossible to compute again, to keep as
    they are: `select * from <this> where <predicate>`, where the predicate's {first_day} is the
    first day a model of `layer` can rebuild. Without retention (or on the model's first build)
    no rows: `select * from <otherwise> where false`.
-#}
{% macro rows_kept_by_retention(layer, predicate, otherwise) %}
    {%- set first = rebuildable_from(layer) -%}
    {%- set existing = none -%}
    {%- if first is not none -%}
        {%- set existing = adapter.get_relation(
            database=this.database, schema=this.schema, identifier=this.identifier
        ) -%}
    {%- endif -%}
    {%- if existing is none -%}
        select * from {{ otherwise }} where false
    {%- else -%}
        {%- do log(
            model.name ~ ": keeps its rows before " ~ first['day'] ~ " as they were built (retention"
            ~ " dropped the days before it from " ~ first['layer'] ~ ", " ~ first['setting'] ~ ")",
            info=True,
        ) -%}
        select * from {{ existing }}
        where {{ predicate | replace('{first_day}', "cast('" ~ first['day'] ~ "' as date)") }}
    {%- endif -%}
{% endmacro %}


{#- Logs which days of a window replace_window keeps as built because of retention. -#}
{% macro log_days_kept_by_retention(layer, days_before, replaced_from) %}
    {%- set first = rebuildable_from(layer, days_before) -%}
    {%- if first is not none and (replaced_from is none or replaced_from < first['day']) -%}
        {%- do log(
            model.name ~ ": the window reaches days before " ~ first['day'] ~ ", which retention"
            ~ " made impossible to rebuild (it dropped the days before "
            ~ (first['day'] - modules.datetime.timedelta(days=days_before | int)) ~ " from "
            ~ first['layer'] ~ ", " ~ first['setting'] ~ "): their rows are kept as they were built",
            info=True,
        ) -%}
    {%- endif -%}
{% endmacro %}


{#- Run-start hook: stops `--full-refresh` once retention has dropped days. -#}
{% macro refuse_full_refresh_after_retention() %}
    {%- if execute and flags.FULL_REFRESH -%}
        {%- set horizons = retention_horizons() -%}
        {%- if horizons -%}
            {%- set latest = horizons.values() | sort(attribute='day') | last -%}
            {{ exceptions.raise_compiler_error(
                "--full-refresh would rebuild the facts and marts from what retention kept and"
                ~ " lose every row before " ~ latest['day'] ~ " (retention dropped those days from "
                ~ latest['layer'] ~ ", " ~ latest['setting'] ~ "). Build without it: days that"
                ~ " cannot be rebuilt keep their rows as they were built."
            ) }}
        {%- endif -%}
    {%- endif -%}
    {{ return('') }}
{% endmacro %}
