{{ config(unique_key='arrived_on') }}

with orders as (
    {{ arrivals('stg_commerce__orders') }}
),

aggregated_per_user_day as (
    select
        user_key,
        arrived_on,
        event_date,
        count(*) filter (where status = 'placed') as orders_placed,
        count(*) filter (where status = 'placed' and payment_type = 'instalment') as orders_instalment,
        count(*) filter (where status = 'placed' and is_coupon_used) as orders_with_coupon,
        count(*) filter (where status = 'placed' and is_address_changed) as orders_to_new_address,
        count(*) filter (where status = 'cancelled') as orders_cancelled,
        count(*) filter (where status = 'returned') as orders_returned,
        sum(amount) filter (where status = 'placed') as amount_placed_sum,
        max(amount) filter (where status = 'placed') as amount_placed_max,
        sum(amount) filter (where status = 'placed' and payment_type = 'instalment') as amount_instalment_sum,
        sum(items) filter (where status = 'placed') as items_placed
    from orders
    group by all
)

select * from aggregated_per_user_day
{{ in_storage_order() }}
