{#- Expand a mart's `meta.features` spec (see _features__models.yml) into one row per user with every
    <family>__<metric>_<agg>_<window>d column and the <...>_<agg>_trend_<short>d_<long>d ratios, read
    from the family's rolling window state (rolling_window_state.sql): what the lender knew when the
    as-of day closed. -#}

{#- `also_users`: a relation whose users get a row even without a window (0 counts, NULL elsewhere). -#}
{% macro windowed_features(state_model, also_users=none) %}
{#- The spec lives in the model's config, which is only filled in once dbt executes. -#}
{%- set spec = model.config.meta['features'] if execute else {'family': '', 'windows': [], 'metrics': []} -%}
select
    user_key,
    cast({{ as_of_day(-1) }} as timestamptz) as event_timestamp,  {#- the instant the day closed #}
{%- for metric in expand_metrics(spec) %}
  {%- for agg, source in metric['aggs'].items() %}
    {%- for window in spec['windows'] %}
    {{ window_feature(spec, metric, agg, source, window) }} as {{ feature_column(spec, metric, agg, window) }},
    {%- endfor %}
    {%- if var('aggregations')[agg].get('trended') %}
      {%- for short, long in spec.get('trends', []) %}
    {{ trend_ratio(source, short, long) }} as {{ feature_column(spec, metric, agg ~ '_trend_' ~ short ~ 'd', long) }},
      {%- endfor %}
    {%- endif %}
  {%- endfor %}
{%- endfor %}
{%- set state = day_file(state_model) %}
{%- if also_users %}
from (select user_key from {{ state }} union select user_key from {{ also_users }}) as spine
left join {{ state }} using (user_key)
{%- else %}
from {{ state }}
{%- endif %}
order by user_key  {#- a stable order: re-running a date rewrites the same file #}
{% endmacro %}


{#- The one place a feature's column name is spelled in SQL (millet.feature_spec spells it for Python). -#}
{% macro feature_column(spec, metric, agg, window) -%}
{{ return(spec['family'] ~ '__' ~ metric['name'] ~ '_' ~ agg ~ '_' ~ window ~ 'd') }}
{%- endmacro %}


{#- One windowed feature from the state: totals are fixed point (state_units), a mean or share is the
    ratio of two totals, days since the last active day counts only inside the window; max, days_active
    and distinct were aggregated by the state model under the feature's own name. -#}
{% macro window_feature(spec, metric, agg, source, window) %}
{%- if agg == 'count' -%}
    cast(coalesce({{ total_column(source, window) }}, 0) / {{ state_units() }} as {{ dbt.type_int() }})
{%- elif agg == 'sum' -%}
    cast(coalesce({{ total_column(source, window) }}, 0) / {{ state_units() }}.0 as {{ dbt.type_float() }})
{%- elif agg in ('mean', 'share') -%}
    cast(cast({{ total_column(source[0], window) }} as {{ dbt.type_float() }}) / nullif({{ total_column(source[1], window) }}, 0) as {{ dbt.type_float() }})
{%- elif agg == 'days_since_last' -%}
    cast(case when {{ last_active_column(source) }} > {{ as_of_day(window) }}
              then {{ dbt.datediff(last_active_column(source), as_of_day(), 'day') }} end as {{ dbt.type_int() }})
{%- elif agg == 'max' -%}
    {{ feature_column(spec, metric, agg, window) }}
{%- elif agg in ('days_active', 'distinct') -%}
    cast(coalesce({{ feature_column(spec, metric, agg, window) }}, 0) as {{ dbt.type_int() }})
{%- else -%}
    {{ exceptions.raise_compiler_error("unknown aggregation '" ~ agg ~ "' in the feature spec") }}
{%- endif -%}
{% endmacro %}


{#- Recent pace against the longer run: (total over `short` days / short) / (total over `long` / long). -#}
{% macro trend_ratio(source, short, long) %}
    cast(
        (cast(coalesce({{ total_column(source, short) }}, 0) as {{ dbt.type_float() }}) / {{ short }})
        / nullif(cast({{ total_column(source, long) }} as {{ dbt.type_float() }}) / {{ long }}, 0)
    as {{ dbt.type_float() }})
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


{% macro snapshot_location(family) %}{{ return(day_location(millet_setting('MILLET_SNAPSHOTS_DIR') ~ '/' ~ family)) }}{% endmacro %}
