{#- Every feature of a mart within the range its aggregation allows, read from the mart's own spec:
    shares in [0, 1]; counts, totals, maxima, distinct counts and trends never negative; days since
    the last event within the window, days active at most the window. Fails on each offending row. -#}
{% test features_in_range(model) %}
{%- set spec = graph.nodes['model.millet.' ~ model.identifier].config.meta['features'] if execute else {} -%}
{%- set checks = [] -%}
{%- for metric in (expand_metrics(spec) if execute else []) -%}
  {%- for agg in metric['aggs'] -%}
    {%- for window in spec['windows'] -%}
      {%- set column = feature_column(spec, metric, agg, window) -%}
      {%- if agg == 'share' -%}
        {%- do checks.append(column ~ ' not between 0 and 1') -%}
      {%- elif agg == 'days_since_last' -%}
        {%- do checks.append(column ~ ' not between 0 and ' ~ (window - 1)) -%}
      {%- elif agg == 'days_active' -%}
        {%- do checks.append(column ~ ' not between 0 and ' ~ window) -%}
      {%- else -%}
        {%- do checks.append(column ~ ' < 0') -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if agg in ('count', 'sum') -%}
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
