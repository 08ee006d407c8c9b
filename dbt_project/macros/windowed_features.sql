{#- Expand the mart's `meta.features` spec (see _features__models.yml) into one row per user
    with every <metric>_<agg>_<window>d column. Reads only arrival days <= as_of. -#}

{% macro windowed_features(daily_model) %}
{%- set as_of = "date '" ~ var('as_of') ~ "'" -%}
{#- The spec lives in the model's config, which is only filled in once dbt executes. -#}
{%- set spec = model.config.meta['features'] if execute else {'family': '', 'windows': [], 'metrics': []} -%}
with daily as (
    select * from {{ ref(daily_model) }}
    where arrived_on <= {{ as_of }}
      and event_date <= {{ as_of }}
      and event_date > {{ as_of }} - {{ var('max_window_days') }}
)

select
    user_key,
    cast({{ as_of }} + interval 1 day as timestamptz) as event_timestamp,
{%- for metric in spec['metrics'] %}
  {%- for agg, source in metric['aggs'].items() %}
    {%- for window in spec['windows'] %}
    {{ window_aggregate(agg, source, window, as_of) }} as {{ spec['family'] }}__{{ metric['name'] }}_{{ agg }}_{{ window }}d,
    {%- endfor %}
  {%- endfor %}
{%- endfor %}
from daily
group by user_key
order by user_key  {#- a stable order: re-running a date rewrites the same file #}
{% endmacro %}


{% macro window_aggregate(agg, source, window, as_of) %}
{%- set in_window = "event_date > " ~ as_of ~ " - " ~ window -%}
{%- if agg in ('count', 'sum') -%}
    cast(coalesce(sum({{ source }}) filter (where {{ in_window }}), 0) as {{ 'integer' if agg == 'count' else 'float' }})
{%- elif agg in ('mean', 'share') -%}
    cast(sum({{ source[0] }}) filter (where {{ in_window }}) / nullif(sum({{ source[1] }}) filter (where {{ in_window }}), 0) as float)
{%- elif agg == 'max' -%}
    cast(max({{ source }}) filter (where {{ in_window }}) as float)
{%- elif agg == 'days_since_last' -%}
    cast({{ as_of }} - max(event_date) filter (where {{ in_window }} and {{ source }} > 0) as integer)
{%- else -%}
    {{ exceptions.raise_compiler_error("unknown aggregation '" ~ agg ~ "' in the feature spec") }}
{%- endif -%}
{% endmacro %}


{% macro snapshot_location(family) %}
{{- env_var('MILLET_SNAPSHOTS_DIR') }}/{{ family }}/dt={{ var('as_of') }}/part-0.parquet
{%- endmacro %}
