{#- Rolling window state (models/state): what lets every window of a family move by one day without
    rereading it.

    Additive windows (count and sum, and the totals behind means, shares and trends) are kept as one total
    per window. Each night adds the rows that became usable that day and subtracts the day that left each
    window (Chronon's and Feathr's incremental aggregation):

        W(d) = W(d-1) + sum(rows usable on d, event_date > d - w) - sum(rows usable before d, event_date = d - w)

    A row is usable from greatest(arrived_on, event_date): the day the lender learned of it (an event from
    a clock running ahead waits for its own day). A late event is added on the day it arrives to every
    window its event day falls in, and leaves each window with its event day, as in a full recomputation.
    Totals are fixed point (integers of 1/state_units()) so that adding and subtracting is exact: a float
    total would not come back to exactly 0 when its last event leaves, and a share over it would explode.

    days_since_last keeps the last active day within the longest window: a window's value is a comparison
    with it. max, days_active and distinct are not subtractable: they are aggregated from the longest
    window's daily partials each night (only their few columns; active days and each value's last day
    first, so each window is a count) and stored beside the totals.

    Without yesterday's state (the first night, a gap) or with var('rebase'), every value is rebuilt from
    the daily partials; millet.transform decides which, re-bases on a schedule and compares the two. -#}

{% macro state_units() %}10000{% endmacro %}


{% macro rolling_window_state(family, daily_models) %}
{%- set spec = family_spec(family) -%}
{%- set plan = window_plan(spec) -%}
{%- set models = [daily_models] if daily_models is string else daily_models -%}
{%- set as_of = var('as_of') -%}
{%- set today = day_literal(as_of) -%}
{%- set oldest = day_literal(days_before(as_of, plan.longest)) %}
{#- Written out where it is read, not a CTE of its own: a CTE read more than once is materialized by
    DuckDB with all its columns (tens of GB at 1M users); each reader scans only the columns it needs. -#}
{%- set window_rows -%}
    ({{ daily_rows(models, window_rows_filter(as_of, plan.longest)) }}) as window_rows
{%- endset %}
with
{%- if var('rebase', false) %}

totals as (
    select
        user_key,
        cast(count(*) as {{ dbt.type_bigint() }}) as rows_in_window
      {%- for source, window in plan.totals %}
        , {{ exact_sum("case when event_date > " ~ day_literal(days_before(as_of, window)) ~ " then " ~ fixed_point(source) ~ " else 0 end") }} as {{ total_column(source, window) }}
      {%- endfor %}
      {%- for source in plan.last_active %}
        , max(case when {{ source }} > 0 then event_date end) as {{ last_active_column(source) }}
      {%- endfor %}
    from {{ window_rows }}
    group by user_key
)
{%- else %}

previous as (
    select * from {{ read_state(state_location(days_before(as_of, 1))) }}
),

changes as (
    select
        user_key,
        sum({{ moved('1', plan.longest, as_of) }}) as rows_in_window
      {%- for source, window in plan.totals %}
        , sum({{ moved(fixed_point(source), window, as_of) }}) as {{ total_column(source, window) }}
      {%- endfor %}
      {%- for source in plan.last_active %}
        , max(case when usable_on = {{ today }} and {{ source }} > 0 then event_date end) as {{ last_active_column(source) }}
      {%- endfor %}
    from ({{ changed_rows(models, as_of, plan.windows) }}) as changed_rows
    group by user_key
),

totals as (
    select
        user_key,
        cast(coalesce(previous.rows_in_window, 0) + coalesce(changes.rows_in_window, 0) as {{ dbt.type_bigint() }}) as rows_in_window
      {%- for source, window in plan.totals %}
        {%- set column = total_column(source, window) %}
        , cast(coalesce(previous.{{ column }}, 0) + coalesce(changes.{{ column }}, 0) as {{ dbt.type_bigint() }}) as {{ column }}
      {%- endfor %}
      {%- for source in plan.last_active %}
        {%- set column = last_active_column(source) %}
        , case when greatest(previous.{{ column }}, changes.{{ column }}) > {{ oldest }}
               then greatest(previous.{{ column }}, changes.{{ column }}) end as {{ column }}
      {%- endfor %}
    from previous
    full join changes using (user_key)
)
{%- endif %}
{%- if plan.maxima %},

maxima as (
    select
        user_key
      {%- for name, source, window in plan.maxima %}
        , cast(max(case when event_date > {{ day_literal(days_before(as_of, window)) }} then {{ source }} end) as {{ dbt.type_float() }}) as {{ name }}
      {%- endfor %}
    from {{ window_rows }}
    group by user_key
)
{%- endif %}
{%- if plan.active %},

{#- A day is active when any of its rows (arrivals) has the partial > 0; counted once per day. -#}
active_days as (
    select
        user_key
      {%- for name, source, window in plan.active %}
        , sum(case when event_date > {{ day_literal(days_before(as_of, window)) }} and {{ source }}_active then 1 else 0 end) as {{ name }}
      {%- endfor %}
    from (
        select
            user_key,
            event_date
          {%- for source in plan.active | map(attribute=1) | unique %}
            , max(case when {{ source }} > 0 then 1 else 0 end) = 1 as {{ source }}_active
          {%- endfor %}
        from {{ window_rows }}
        group by user_key, event_date
    ) as days
    group by user_key
)
{%- endif %}
{%- for source in plan.distinct | map(attribute=1) | unique %},

{#- Each value's last day in the window; a window's distinct count is the values seen inside it. -#}
distinct__{{ source }} as (
    select
        user_key
      {%- for name, distinct_source, window in plan.distinct if distinct_source == source %}
        , sum(case when last_seen > {{ day_literal(days_before(as_of, window)) }} then 1 else 0 end) as {{ name }}
      {%- endfor %}
    from (
        select user_key, value, max(event_date) as last_seen
        from (select user_key, event_date, {{ explode_list(source) }} as value from {{ window_rows }}) as values_seen
        group by user_key, value
    ) as last_seen_values
    group by user_key
)
{%- endfor %}

select
    totals.*
  {%- for name, source, window in plan.maxima %}
    , maxima.{{ name }}
  {%- endfor %}
  {%- for name, source, window in plan.active %}
    , cast(coalesce(active_days.{{ name }}, 0) as {{ dbt.type_int() }}) as {{ name }}
  {%- endfor %}
  {%- for name, source, window in plan.distinct %}
    , cast(coalesce(distinct__{{ source }}.{{ name }}, 0) as {{ dbt.type_int() }}) as {{ name }}
  {%- endfor %}
from totals
{%- if plan.maxima %}
left join maxima using (user_key)
{%- endif %}
{%- if plan.active %}
left join active_days using (user_key)
{%- endif %}
{%- for source in plan.distinct | map(attribute=1) | unique %}
left join distinct__{{ source }} using (user_key)
{%- endfor %}
where totals.rows_in_window > 0  {#- a user drops out once their last row has left the longest window #}
order by user_key
{% endmacro %}


{#- What a family's state holds, from its spec: `totals`, the (source, window) pairs behind every count,
    sum, mean, share and trend; `last_active`, the sources of days_since_last; `maxima`, `active` and
    `distinct`, the features aggregated from the window each night, as (feature name, source, window). -#}
{% macro window_plan(spec) %}
{%- set totals, last_active, scanned = [], [], {'max': [], 'days_active': [], 'distinct': []} -%}
{%- for metric in expand_metrics(spec) -%}
  {%- for agg, source in metric['aggs'].items() -%}
    {%- for window in spec['windows'] -%}
      {%- if agg in ('count', 'sum') -%}
        {%- set pairs = [[source, window]] -%}
      {%- elif agg in ('mean', 'share') -%}
        {%- set pairs = [[source[0], window], [source[1], window]] -%}
      {%- else -%}
        {%- set pairs = [] -%}
        {%- if agg == 'days_since_last' -%}
          {%- if source not in last_active -%}{%- do last_active.append(source) -%}{%- endif -%}
        {%- else -%}
          {%- do scanned[agg].append([feature_column(spec, metric, agg, window), source, window]) -%}
        {%- endif -%}
      {%- endif -%}
      {%- for pair in pairs if pair not in totals -%}{%- do totals.append(pair) -%}{%- endfor -%}
    {%- endfor -%}
    {%- if agg in ('count', 'sum') -%}
      {%- for short, long in spec.get('trends', []) -%}
        {%- for pair in [[source, short], [source, long]] if pair not in totals -%}{%- do totals.append(pair) -%}{%- endfor -%}
      {%- endfor -%}
    {%- endif -%}
  {%- endfor -%}
{%- endfor -%}
{{ return({'windows': spec['windows'], 'longest': spec['windows'] | max if spec['windows'] else 0,
           'totals': totals, 'last_active': last_active, 'maxima': scanned['max'],
           'active': scanned['days_active'], 'distinct': scanned['distinct']}) }}
{% endmacro %}


{#- A row's contribution to the change of a window's total on as-of day d: added on the day it became
    usable if its event day is inside the window; subtracted on the day its event day leaves it. -#}
{% macro moved(value, window, as_of) %}
    case when usable_on = {{ day_literal(as_of) }}
         then case when event_date > {{ day_literal(days_before(as_of, window)) }} then {{ value }} else 0 end
         when event_date = {{ day_literal(days_before(as_of, window)) }} then -{{ value }}
         else 0 end
{%- endmacro %}


{#- The daily rows that change some window on as-of day d: those usable from d, and, for each window,
    the event day that leaves it (usable before d). Separate scans with plain predicates, so that DuckDB
    skips row groups by their min/max event_date and arrival day. -#}
{% macro changed_rows(models, as_of, windows) %}
{%- set filters = ["arrived_on = " ~ day_literal(as_of) ~ " and event_date <= " ~ day_literal(as_of),
                   "event_date = " ~ day_literal(as_of) ~ " and arrived_on < " ~ day_literal(as_of)] -%}
{%- for window in windows -%}
  {%- do filters.append("event_date = " ~ day_literal(days_before(as_of, window)) ~ " and arrived_on < " ~ day_literal(as_of)) -%}
{%- endfor -%}
select *, greatest(arrived_on, event_date) as usable_on
from ({{ daily_rows(models, filters) }}) as rows_changed
{%- endmacro %}


{#- Every daily row the lender knew of on as-of day d whose event day is inside the longest window. -#}
{% macro window_rows_filter(as_of, longest) %}
{{ return(["arrived_on <= " ~ day_literal(as_of) ~ " and event_date <= " ~ day_literal(as_of)
           ~ " and event_date > " ~ day_literal(days_before(as_of, longest))]) }}
{% endmacro %}


{#- The daily partials of a family's models matching any of `filters`, joined on their key. -#}
{% macro daily_rows(models, filters) %}
    select * from {{ _filtered(models[0], filters) }} as {{ models[0] }}
  {%- for other in models[1:] %}
    full join {{ _filtered(other, filters) }} as {{ other }} using (user_key, arrived_on, event_date)
  {%- endfor %}
{%- endmacro %}


{% macro _filtered(daily_model, filters) %}
(
  {%- for condition in filters %}
    {{ 'union all ' if not loop.first }}select * from {{ ref(daily_model) }} where {{ condition }}
  {%- endfor %}
)
{%- endmacro %}


{#- A sum of fixed-point integers, kept a 64-bit integer (DuckDB widens sums to 128 bits). -#}
{% macro exact_sum(expression) -%}
    cast(sum({{ expression }}) as {{ dbt.type_bigint() }})
{%- endmacro %}

{% macro fixed_point(source) -%}
    cast(round(coalesce({{ source }}, 0) * {{ state_units() }}) as {{ dbt.type_bigint() }})
{%- endmacro %}

{% macro total_column(source, window) %}{{ return('t' ~ window ~ 'd__' ~ ('rows' if source == '1' else source)) }}{% endmacro %}

{% macro last_active_column(source) %}{{ return('last_active__' ~ source) }}{% endmacro %}


{#- A family's spec lives in its mart's config (models/marts/features/_features__models.yml). -#}
{% macro family_spec(family) %}
{%- if not execute -%}
  {{ return({'family': family, 'windows': [], 'metrics': []}) }}
{%- endif -%}
{{ return(graph.nodes['model.millet.fct_user_features__' ~ family].config.meta['features']) }}
{% endmacro %}


{% macro days_before(day, days) %}
{{ return((modules.datetime.datetime.strptime(day, '%Y-%m-%d') - modules.datetime.timedelta(days=days)).strftime('%Y-%m-%d')) }}
{% endmacro %}

{% macro day_literal(day) %}{{ return("cast('" ~ day ~ "' as date)") }}{% endmacro %}


{#- Each state model's file for a day: <state dir>/<model>/dt=<day>/part-0.parquet. -#}
{% macro state_location(day) %}
{{- env_var('MILLET_STATE_DIR') }}/{{ model.name }}/dt={{ day }}/part-0.parquet
{%- endmacro %}


{#- Yesterday's state, read back from its file (the state models are external Parquet files per day). -#}
{% macro read_state(path) %}{{ return(adapter.dispatch('read_state')(path)) }}{% endmacro %}

{% macro duckdb__read_state(path) %}read_parquet('{{ path }}'){% endmacro %}

{% macro default__read_state(path) %}parquet.`{{ path }}`{% endmacro %}


{#- One row per element of a list column. -#}
{% macro explode_list(column) %}{{ return(adapter.dispatch('explode_list')(column)) }}{% endmacro %}

{% macro duckdb__explode_list(column) %}unnest({{ column }}){% endmacro %}

{% macro default__explode_list(column) %}explode({{ column }}){% endmacro %}
