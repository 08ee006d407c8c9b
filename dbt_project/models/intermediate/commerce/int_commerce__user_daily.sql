{{ config(unique_key='arrived_on') }}

{#- One row per user, arrival day and event day. A nightly run replaces just the as-of arrival day;
    the first run (or --full-refresh) builds every arrival day up to as-of in one pass. -#}

with orders as (
    select * from {{ ref('stg_commerce__orders') }}
    where arrived_on <= date '{{ var("as_of") }}'
    {% if is_incremental() %}
      and arrived_on = date '{{ var("as_of") }}'
    {% endif %}
),

aggregated_per_user_day as (
    select
        user_key,
        arrived_on,
        event_date,
        count(*) filter (where status = 'placed') as orders_placed,
        count(*) filter (where status = 'placed' and payment_type = 'instalment') as orders_instalment,
        count(*) filter (where status = 'cancelled') as orders_cancelled,
        sum(amount) filter (where status = 'placed') as amount_placed_sum,
        max(amount) filter (where status = 'placed') as amount_placed_max
    from orders
    group by all
)

select * from aggregated_per_user_day
