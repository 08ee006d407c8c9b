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

    The other kinds are not subtractable; each keeps what decides it inside the longest window:
    - days_since_last: the last active day;
    - days_active: a bitmap of the active days (bit i: i days before as-of), shifted by one each night;
    - max: per source, the staircase of later maxima (state_<family>__maxima: a day's value is kept while
      no later day has one as large), so a window's max is the first step inside it;
    - distinct: per source, each value's last day (state_<family>__values).

    Without yesterday's state (the first night, a gap) or with run_var('rebase'), every value is rebuilt from
    the daily partials; millet.transform decides which, re-bases on a schedule and compares the two. -#}

{% macro state_units() %}10000{% endmacro %}

{#- How many window totals one aggregate of a re-base computes. -#}
{% macro rebuild_batch() %}{{ return(100) }}{% endmacro %}


{#- state_<family>__windows: the totals, last active days and active-day bitmaps, and each window's
    max and distinct count, read from the family's other two states, under the features' own names. -#}
{% macro rolling_window_state(family) %}
{%- set spec = family_spec(family) -%}
{%- set plan = window_plan(spec) -%}
{%- set models = family_partials(family) -%}
{%- set active_sources = plan.active | map(attribute=1) | unique | list -%}
{%- set leaving_windows = (plan.totals | map(attribute=1) | list + [plan.longest]) | unique | sort | list %}
with
{%- if run_var('rebase', false) %}
{%- set batches = plan.totals | batch(rebuild_batch()) | list %}

{# In batches of totals, each its own aggregate joined on the user: one aggregate of every total held
   1M users x 700 running sums, past any memory limit, and DuckDB spilled it past the free disk. #}
window_users as (
    select
        user_key,
        cast(count(*) as {{ dbt.type_bigint() }}) as rows_in_window
      {%- for source in plan.last_active %}
        , max(case when {{ source }} > 0 then event_date end) as {{ last_active_column(source) }}
      {%- endfor %}
      {%- for source in active_sources %}
        , {{ active_days_bits(source, plan.longest) }} as {{ active_bits_column(source) }}
      {%- endfor %}
    from ({{ daily_rows(models, [window_rows_filter(plan.longest)]) }}) as window_rows
    group by user_key
),
{%- for batch in batches %}

totals_{{ loop.index }} as (
    select
        user_key
      {%- for source, window in batch %}
        , {{ exact_sum("case when event_date > " ~ as_of_day(window) ~ " then " ~ fixed_point(source) ~ " else 0 end") }} as {{ total_column(source, window) }}
      {%- endfor %}
    from ({{ daily_rows(models, [window_rows_filter(plan.longest)]) }}) as window_rows
    group by user_key
),
{%- endfor %}

totals as (
    select
        user_key,
        window_users.rows_in_window
      {%- for source, window in plan.totals %}
        , {{ total_column(source, window) }}
      {%- endfor %}
      {%- for source in plan.last_active %}
        , {{ last_active_column(source) }}
      {%- endfor %}
      {%- for source in active_sources %}
        , {{ active_bits_column(source) }}
      {%- endfor %}
    from window_users
  {%- for batch in batches %}
    join totals_{{ loop.index }} using (user_key)
  {%- endfor %}
)
{%- else %}

previous as (
    select * from {{ yesterdays_state() }}
),

{#- The rows that became usable today, added to every window their event day falls in. -#}
added as (
    select
        user_key,
        count(*) filter (where event_date > {{ as_of_day(plan.longest) }}) as rows_in_window
      {%- for source, window in plan.totals %}
        , sum(case when event_date > {{ as_of_day(window) }} then {{ fixed_point(source) }} else 0 end) as {{ total_column(source, window) }}
      {%- endfor %}
      {%- for source in plan.last_active %}
        , max(case when {{ source }} > 0 then event_date end) as {{ last_active_column(source) }}
      {%- endfor %}
      {%- for source in active_sources %}
        , {{ active_days_bits(source, plan.longest) }} as {{ active_bits_column(source) }}
      {%- endfor %}
    from ({{ daily_rows(models, usable_today()) }}) as usable_rows
    group by user_key
),
{%- for window in leaving_windows %}

{#- The event day that left the {{ window }}-day window tonight (its rows known before today). -#}
left_{{ window }}d as (
    select
        user_key
      {%- if window == plan.longest %}
        , count(*) as rows_in_window
      {%- endif %}
      {%- for source, total_window in plan.totals if total_window == window %}
        , sum({{ fixed_point(source) }}) as {{ total_column(source, window) }}
      {%- endfor %}
    from ({{ leaving_rows(family, window) }}) as leaving_rows
    group by user_key
),
{%- endfor %}

totals as (
    select
        user_key,
        cast(coalesce(previous.rows_in_window, 0) + coalesce(added.rows_in_window, 0)
             - coalesce(left_{{ plan.longest }}d.rows_in_window, 0) as {{ dbt.type_bigint() }}) as rows_in_window
      {%- for source, window in plan.totals %}
        {%- set column = total_column(source, window) %}
        , cast(coalesce(previous.{{ column }}, 0) + coalesce(added.{{ column }}, 0)
               - coalesce(left_{{ window }}d.{{ column }}, 0) as {{ dbt.type_bigint() }}) as {{ column }}
      {%- endfor %}
      {%- for source in plan.last_active %}
        {%- set column = last_active_column(source) %}
        , case when greatest(previous.{{ column }}, added.{{ column }}) > {{ as_of_day(plan.longest) }}
               then greatest(previous.{{ column }}, added.{{ column }}) end as {{ column }}
      {%- endfor %}
      {%- for source in active_sources %}
        {%- set column = active_bits_column(source) %}
        {#- yesterday's bit i is today's bit i + 1; the day that left the longest window falls off the end #}
        , cast((coalesce(cast(previous.{{ column }} as bit), {{ no_active_days(plan.longest) }}) >> 1)
               | coalesce(cast(added.{{ column }} as bit), {{ no_active_days(plan.longest) }}) as varchar) as {{ column }}
      {%- endfor %}
    from previous
    full join added using (user_key)
  {%- for window in leaving_windows %}
    full join left_{{ window }}d using (user_key)
  {%- endfor %}
)
{%- endif %}
{%- if plan.maxima %},

maxima as (
    select
        user_key
      {%- for name, source, window in plan.maxima %}
        , cast(max(case when source = '{{ source }}' and event_date > {{ as_of_day(window) }} then value end) as {{ dbt.type_float() }}) as {{ name }}
      {%- endfor %}
    from {{ day_file('state_' ~ family ~ '__maxima') }}
    group by user_key
)
{%- endif %}
{%- if plan.distinct %},

distinct_values as (
    select
        user_key
      {%- for name, source, window in plan.distinct %}
        , count(*) filter (where source = '{{ source }}' and last_seen > {{ as_of_day(window) }}) as {{ name }}
      {%- endfor %}
    from {{ day_file('state_' ~ family ~ '__values') }}
    group by user_key
)
{%- endif %}

select
    totals.*
  {%- for name, source, window in plan.active %}
    , cast(bit_count(cast({{ active_bits_column(source) }} as bit) & {{ first_days(window, plan.longest) }}) as {{ dbt.type_int() }}) as {{ name }}
  {%- endfor %}
  {%- for name, source, window in plan.maxima %}
    , maxima.{{ name }}
  {%- endfor %}
  {%- for name, source, window in plan.distinct %}
    , cast(coalesce(distinct_values.{{ name }}, 0) as {{ dbt.type_int() }}) as {{ name }}
  {%- endfor %}
from totals
{%- if plan.maxima %}
left join maxima using (user_key)
{%- endif %}
{%- if plan.distinct %}
left join distinct_values using (user_key)
{%- endif %}
where totals.rows_in_window > 0  {#- a user drops out once their last row has left the longest window #}
order by user_key
{% endmacro %}


{#- state_<family>__maxima: for each source of a max, per user, the days inside the longest window whose
    value no later day reaches (a staircase, falling with time): the max over any window is the value
    of its earliest step inside it. A night merges yesterday's steps with the day's usable rows. -#}
{% macro window_maxima_state(family) %}
{%- set spec = family_spec(family) -%}
{%- set plan = window_plan(spec) -%}
{%- set sources = plan.maxima | map(attribute=1) | unique | list %}
{{ depends_on_partials(family) }}
with candidates as (
  {%- for source in sources %}
    {{ 'union all ' if not loop.first }}select user_key, '{{ source }}' as source, event_date, cast({{ source }} as {{ dbt.type_float() }}) as value
    from ({{ daily_rows(family_partials(family), new_rows_filters(plan.longest)) }}) as rows_{{ loop.index }}
    where {{ source }} is not null
  {%- endfor %}
  {%- if not run_var('rebase', false) %}
    union all
    select user_key, source, event_date, value from {{ yesterdays_state() }} where event_date > {{ as_of_day(plan.longest) }}
  {%- endif %}
),

{#- A row stays if it beats every later day's; of a day's rows that stay (several arrivals), the largest. -#}
steps as (
    select
        *,
        max(value) over (partition by user_key, source order by event_date
                         range between interval 1 day following and unbounded following) as later_max
    from candidates
)

select user_key, source, event_date, max(value) as value
from steps
where later_max is null or value > later_max
group by user_key, source, event_date
order by user_key, source, event_date
{% endmacro %}


{#- state_<family>__values: for each source of a distinct count, per user, each value seen inside the
    longest window and the last day it was seen; a window's count is the values last seen inside it. -#}
{% macro window_values_state(family) %}
{%- set spec = family_spec(family) -%}
{%- set plan = window_plan(spec) -%}
{%- set sources = plan.distinct | map(attribute=1) | unique | list %}
{{ depends_on_partials(family) }}
with candidates as (
  {%- for source in sources %}
    {{ 'union all ' if not loop.first }}select user_key, '{{ source }}' as source, event_date as last_seen, {{ explode_list(source) }} as value
    from ({{ daily_rows(family_partials(family), new_rows_filters(plan.longest)) }}) as rows_{{ loop.index }}
  {%- endfor %}
  {%- if not run_var('rebase', false) %}
    union all
    select user_key, source, last_seen, value from {{ yesterdays_state() }} where last_seen > {{ as_of_day(plan.longest) }}
  {%- endif %}
)

select user_key, source, value, max(last_seen) as last_seen
from candidates
group by user_key, source, value
order by user_key, source, value
{% endmacro %}


{#- state_<family>__late: the daily rows that arrived after their event day, while that day is inside the
    longest window. The rows of the day that leaves a window are found by their arrival day, which the
    daily partials are ordered by (ingestion refuses an event stamped more than minutes after its drop
    closed, so an event arrives on its day or the day before), and among these late ones: a scan of the
    partials by event day alone would read every row group, a late event in each. -#}
{% macro late_rows_state(family) %}
{%- set longest = window_plan(family_spec(family)).longest -%}
{{ depends_on_partials(family) }}
{%- if run_var('rebase', false) %}
select * from ({{ daily_rows(family_partials(family), [window_rows_filter(longest) ~ " and arrived_on > event_date"]) }}) as late
{%- else %}
select * from {{ yesterdays_state() }} where event_date > {{ as_of_day(longest) }}
union all by name
select * from ({{ daily_rows(family_partials(family), ["arrived_on = " ~ as_of_day() ~ " and event_date < " ~ as_of_day() ~ " and event_date > " ~ as_of_day(longest)]) }}) as late
{%- endif %}
order by event_date, user_key, arrived_on
{% endmacro %}


{#- The rows of the event day that leaves the `window`-day window tonight, as known before today: those
    that came on time (or a day early), by their arrival day, and the late ones, from yesterday's state. -#}
{% macro leaving_rows(family, window) %}
{%- set day = as_of_day(window) -%}
select * from ({{ daily_rows(family_partials(family), ["event_date = " ~ day ~ " and arrived_on between " ~ day ~ " - 1 and " ~ day]) }}) as on_time
union all by name
select * from {{ day_file('state_' ~ family ~ '__late', 1) }}
where event_date = {{ day }}
{% endmacro %}


{#- The daily rows a state adds: on a re-base every row of the longest window, else the day's usable rows
    (late ones older than the longest window change nothing). -#}
{% macro new_rows_filters(longest) %}
{%- if run_var('rebase', false) -%}
  {{ return([window_rows_filter(longest)]) }}
{%- endif -%}
{%- set filters = [] -%}
{%- for condition in usable_today() -%}
  {%- do filters.append(condition ~ " and event_date > " ~ as_of_day(longest)) -%}
{%- endfor -%}
{{ return(filters) }}
{% endmacro %}


{#- The active days of `source` among the rows (those matching `condition`) as a bitmap of the longest
    window: bit i set when the day i days before as-of had the partial > 0 in any row. -#}
{% macro active_days_bits(source, longest, condition='true') -%}
    cast(coalesce(bitstring_agg(cast({{ as_of_day() }} - event_date as integer), 0, {{ longest - 1 }})
                  filter (where {{ source }} > 0 and event_date > {{ as_of_day(longest) }} and {{ condition }}),
                  {{ no_active_days(longest) }}) as varchar)
{%- endmacro %}

{% macro no_active_days(longest) %}bitstring('0', {{ longest }}){% endmacro %}

{#- A mask of the first `days` bits (the window's days) of the longest window's bitmap. -#}
{% macro first_days(days, longest) %}cast('{{ '1' * days ~ '0' * (longest - days) }}' as bit){% endmacro %}

{% macro active_bits_column(source) %}{{ return('active_days__' ~ source) }}{% endmacro %}


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
    {%- if var('aggregations')[agg].get('trended') -%}
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


{#- Every daily row the lender knew of on the as-of day whose event day is inside the longest window. -#}
{% macro window_rows_filter(longest) %}
{{ return(known_by_as_of() ~ " and event_date > " ~ as_of_day(longest)) }}
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
    {{ 'union all ' if not loop.first }}select * from {{ ref(daily_model) }} where {{ condition }}{{ and_in_user_slice() }}
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


{#- dbt learns a model's refs when it parses, before the spec is readable (which sources a state reads). -#}
{% macro depends_on_partials(family) %}
{%- for partial in family_partials(family) %}{% do ref(partial) %}{% endfor -%}
{% endmacro %}


{#- The daily partial models (models/intermediate) each family's windows aggregate. Declared here rather
    than in the spec: dbt must see a model's refs when it parses, before the spec can be read. -#}
{% macro family_partials(family) %}
{{ return({
    'appstore': ['int_appstore__user_daily'],
    'commerce': ['int_commerce__user_daily'],
    'credit': ['int_loans__user_daily', 'int_bank_repayments__user_daily'],
    'device': ['int_device__user_daily'],
    'forum': ['int_forum__user_daily'],
    'payments': ['int_payments__user_daily'],
}[family]) }}
{% endmacro %}


{#- A family's spec lives in its mart's config (models/marts/features/_features__models.yml). -#}
{% macro family_spec(family) %}
{%- if not execute -%}
  {{ return({'family': family, 'windows': [], 'metrics': []}) }}
{%- endif -%}
{{ return(graph.nodes['model.millet.fct_user_features__' ~ family].config.meta['features']) }}
{% endmacro %}


{#- One row per element of a list column. -#}
{% macro explode_list(column) %}{{ return(adapter.dispatch('explode_list')(column)) }}{% endmacro %}

{% macro duckdb__explode_list(column) %}unnest({{ column }}){% endmacro %}

{% macro default__explode_list(column) %}explode({{ column }}){% endmacro %}
