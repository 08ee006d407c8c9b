{#- Every feature of a mart within the range its aggregation allows (var('aggregations'): never negative,
    and at most `at_most`), read from the mart's own spec. Fails on each offending row. -#}
{% test features_in_range(model) %}
{%- set spec = graph.nodes['model.millet.' ~ model.identifier].config.meta['features'] if execute else {} -%}
{%- set checks = [] -%}
{%- for metric in (expand_metrics(spec) if execute else []) -%}
  {%- for agg in metric['aggs'] -%}
    {%- for window in spec['windows'] -%}
      {%- set column = feature_column(spec, metric, agg, window) -%}
      {%- set at_most = var('aggregations')[agg]['at_most'] -%}
      {%- if at_most is none -%}
        {%- do checks.append(column ~ ' < 0') -%}
      {%- else -%}
        {%- do checks.append(column ~ ' not between 0 and ' ~ at_most | replace('window', window)) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if var('aggregations')[agg].get('trended') -%}
      {%- for short, long in spec.get('trends', []) -%}
        {%- do checks.append(feature_column(spec, metric, agg ~ '_trend_' ~ short ~ 'd', long) ~ ' < 0') -%}
      {%- endfor -%}
    {%- endif -%}
  {%- endfor -%}
{%- endfor %}
{%- for state in spec.get('state', []) if execute -%}
  {%- do checks.append(spec['family'] ~ '__' ~ state['name'] ~ ' < 0') -%}
{%- endfor %}
select user_key
from {{ model }}
where {{ checks | join('\n   or ') if checks else 'false' }}
{% endtest %}
