{#- Expand a mart's `meta.features` spec (see _features__models.yml) into one row per user with every
    <family>__<metric>_<agg>_<window>d column and the <...>_<agg>_trend_<short>d_<long>d ratios.
    Reads only arrival days <= as_of: what the lender knew when the day closed. -#}

{% macro windowed_features(daily_models) %}
{%- set as_of = "date '" ~ var('as_of') ~ "'" -%}
{#- The spec lives in the model's config, which is only filled in once dbt executes. -#}
{%- set spec = model.config.meta['features'] if execute else {'family': '', 'windows': [], 'metrics': []} -%}
{%- set models = [daily_models] if daily_models is string else daily_models -%}
with daily as (
    select * from {{ _recent_arrivals(models[0], as_of) }}
    {%- for other in models[1:] %}
    full join {{ _recent_arrivals(other, as_of) }} using (user_key, arrived_on, event_date)
    {%- endfor %}
)

select
    user_key,
    cast({{ as_of }} + interval 1 day as timestamptz) as event_timestamp,
{%- for metric in expand_metrics(spec) %}
  {%- for agg, source in metric['aggs'].items() %}
    {%- for window in spec['windows'] %}
    {{ window_aggregate(agg, source, window, as_of) }} as {{ spec['family'] }}__{{ metric['name'] }}_{{ agg }}_{{ window }}d,
    {%- endfor %}
    {%- if agg in ('count', 'sum') %}
      {%- for short, long in spec.get('trends', []) %}
    {{ trend_ratio(source, short, long, as_of) }} as {{ spec['family'] }}__{{ metric['name'] }}_{{ agg }}_trend_{{ short }}d_{{ long }}d,
      {%- endfor %}
    {%- endif %}
  {%- endfor %}
{%- endfor %}
from daily
group by user_key
order by user_key  {#- a stable order: re-running a date rewrites the same file #}
{% endmacro %}


{% macro _recent_arrivals(daily_model, as_of) %}
(
    select * from {{ ref(daily_model) }}
    where arrived_on <= {{ as_of }}
      and event_date <= {{ as_of }}
      and event_date > {{ as_of }} - {{ var('max_window_days') }}
)
{%- endmacro %}


{#- A metric with `by: {channel, column}` becomes one metric per category of that bronze column;
    `{category}` in its name, description and sources is replaced by each category in turn. -#}
{% macro expand_metrics(spec) %}
{%- set expanded = [] -%}
{%- for metric in spec['metrics'] -%}
  {%- if metric.get('by') -%}
    {%- for category in enum_of(metric['by']['channel'], metric['by']['column']) -%}
      {%- set aggs = {} -%}
      {%- for agg, source in metric['aggs'].items() -%}
        {%- do aggs.update({agg: _fill(source, category)}) -%}
      {%- endfor -%}
      {%- do expanded.append({'name': metric['name'] | replace('{category}', category), 'aggs': aggs}) -%}
    {%- endfor -%}
  {%- else -%}
    {%- do expanded.append(metric) -%}
  {%- endif -%}
{%- endfor -%}
{{ return(expanded) }}
{% endmacro %}


{% macro _fill(source, category) %}
{%- if source is string -%}
  {{ return(source | replace('{category}', category)) }}
{%- else -%}
  {{ return(source | map('replace', '{category}', category) | list) }}
{%- endif -%}
{% endmacro %}


{% macro window_aggregate(agg, source, window, as_of) %}
{%- set in_window = "event_date > " ~ as_of ~ " - " ~ window -%}
{%- if agg in ('count', 'sum') -%}
    cast(coalesce(sum({{ source }}) filter (where {{ in_window }}), 0) as {{ 'integer' if agg == 'count' else 'float' }})
{%- elif agg in ('mean', 'share') -%}
    cast(coalesce(sum({{ source[0] }}) filter (where {{ in_window }}), 0) / nullif(sum({{ source[1] }}) filter (where {{ in_window }}), 0) as float)
{%- elif agg == 'max' -%}
    cast(max({{ source }}) filter (where {{ in_window }}) as float)
{%- elif agg == 'days_since_last' -%}
    cast({{ as_of }} - max(event_date) filter (where {{ in_window }} and {{ source }} > 0) as integer)
{%- elif agg == 'days_active' -%}
    cast(count(distinct event_date) filter (where {{ in_window }} and {{ source }} > 0) as integer)
{%- elif agg == 'distinct' -%}
    cast(coalesce(len(list_distinct(flatten(list({{ source }}) filter (where {{ in_window }})))), 0) as integer)
{%- else -%}
    {{ exceptions.raise_compiler_error("unknown aggregation '" ~ agg ~ "' in the feature spec") }}
{%- endif -%}
{% endmacro %}


{#- Recent pace against the longer run: (total over `short` days / short) / (total over `long` / long). -#}
{% macro trend_ratio(source, short, long, as_of) %}
    cast(
        (coalesce(sum({{ source }}) filter (where event_date > {{ as_of }} - {{ short }}), 0) / {{ short }})
        / nullif(sum({{ source }}) filter (where event_date > {{ as_of }} - {{ long }}) / {{ long }}, 0)
    as float)
{%- endmacro %}


{% macro snapshot_location(family) %}
{{- env_var('MILLET_SNAPSHOTS_DIR') }}/{{ family }}/dt={{ var('as_of') }}/part-0.parquet
{%- endmacro %}
