{#- State carried forward from day to day, for aggregates that only grow (a loan book): yesterday's rows
    merged with what became usable today. Each aggregate is (name, function, expression) with a function
    that merges its own partial results (min, max, sum), so merging yesterday's row with today's equals
    aggregating the whole history: a re-base (run_var('rebase')) aggregates the whole history, and
    millet.transform compares the two. -#}

{% macro carried_state(events_model, keys, aggregates, where='true') %}
{%- set filters = usable_today() if not run_var('rebase', false) else [known_by_as_of()] -%}
with events as (
  {%- for condition in filters %}
    {{ 'union all ' if not loop.first }}select * from {{ ref(events_model) }} where {{ condition }} and {{ where }}{{ and_in_user_slice() }}
  {%- endfor %}
),

usable as (
    select
        {{ keys | join(', ') }}
      {%- for name, function, expression in aggregates %}
        , {{ exact_sum(expression) if function == 'sum' else function ~ '(' ~ expression ~ ')' }} as {{ name }}
      {%- endfor %}
    from events
    group by {{ keys | join(', ') }}
)
{%- if not run_var('rebase', false) %},

merged as (
    select
        {{ keys | join(', ') }}
      {%- for name, function, expression in aggregates %}
        , {{ exact_sum(name) if function == 'sum' else function ~ '(' ~ name ~ ')' }} as {{ name }}
      {%- endfor %}
    from (
        select * from usable
        union all
        select {{ keys | join(', ') }}{% for name, f, e in aggregates %}, {{ name }}{% endfor %}
        from {{ yesterdays_state() }}
    ) as yesterday_and_today
    group by {{ keys | join(', ') }}
)
{%- endif %}

select * from {{ 'usable' if run_var('rebase', false) else 'merged' }}
order by {{ keys | join(', ') }}
{% endmacro %}


{#- Whole months from `start` to `end` (a month not yet complete does not count). -#}
{% macro whole_months_between(start, end) %}{{ return(adapter.dispatch('whole_months_between')(start, end)) }}{% endmacro %}

{% macro duckdb__whole_months_between(start, end) %}date_sub('month', {{ start }}, {{ end }}){% endmacro %}

{% macro default__whole_months_between(start, end) %}floor(months_between({{ end }}, {{ start }})){% endmacro %}
