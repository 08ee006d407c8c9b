{#- Helpers for the intermediate `int_<channel>__user_daily` models: which arrivals a run reads, and
    per-category partial columns expanded over the contract's enum (dbt's bronze sources carry it). -#}

{#- A nightly (incremental) run reads just the as-of arrival day, a history build its range's arrival
    days; the first run, or --full-refresh, reads every arrival day up to as-of. -#}
{% macro arrivals(staging_model) %}
    select * from {{ ref(staging_model) }}
    where arrived_on <= date '{{ run_var("as_of") }}'
    {%- if is_incremental() %}
      and arrived_on >= date '{{ run_var("history_from", run_var("as_of")) }}'
    {%- endif %}
{% endmacro %}


{#- How the partials are stored: by arrival day, then event day and user. The state models read one
    arrival or event day at a time, and DuckDB skips the row groups that hold other days only if each
    holds few; a history build appends its whole range at once, which the aggregate leaves mixed. By
    user within a day, so that a slice of user keys (user_slices.sql) skips the rest of the day. -#}
{% macro in_storage_order() %}order by arrived_on, event_date, user_key{% endmacro %}


{% macro enum_of(channel, column) %}
{%- if not execute -%}
  {{ return([]) }}
{%- endif -%}
{%- set source_node = graph.sources['source.millet.bronze.' ~ channel] -%}
{%- set values = source_node.columns[column].meta.get('enum') if column in source_node.columns else none -%}
{%- if not values -%}
  {{ exceptions.raise_compiler_error("bronze." ~ channel ~ "." ~ column ~ " has no enum in its contract") }}
{%- endif -%}
{{ return(values) }}
{% endmacro %}


{#- `, count(*) filter (where <column> = '<category>' and <condition>) as <prefix>__<category>` for
    each category; with `measure`, a sum of it instead of a count. -#}
{% macro each_category(channel, column, prefix, condition='true', measure=none) %}
{%- for category in enum_of(channel, column) %}
    , {{ 'sum(' ~ measure ~ ')' if measure else 'count(*)' }} filter (where {{ column }} = '{{ category }}' and {{ condition }}) as {{ prefix }}__{{ category }}
{%- endfor %}
{% endmacro %}


{#- The columns every bronze event has in staging: who, which event, when it happened, and the day
    it ARRIVED, the day the lender learned of it, which alone decides which snapshots may use it. -#}
{% macro event_columns(happened_at) %}
        user_key,
        event_id,
        event_ts as {{ happened_at }},
        cast(event_ts as date) as event_date,
        cast(dt as date) as arrived_on
{%- endmacro %}
