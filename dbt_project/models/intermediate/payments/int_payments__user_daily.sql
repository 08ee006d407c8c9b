{{ config(unique_key='arrived_on') }}

with transactions as (
    {{ arrivals('stg_payments__transactions') }}
),

aggregated_per_user_day as (
    select
        user_key,
        arrived_on,
        event_date,
        count(*) as attempts,
        count(*) filter (where status = 'approved') as payments,
        sum(amount) filter (where status = 'approved') as amount_paid_sum,
        max(amount) filter (where status = 'approved') as amount_paid_max,
        count(*) filter (where status = 'declined_insufficient_funds') as declines_insufficient_funds,
        count(*) filter (where status = 'declined_other') as declines_other,
        sum(amount) filter (where status = 'declined_insufficient_funds') as amount_declined_sum,
        list_sort(coalesce(list(distinct merchant_category) filter (where status = 'approved'), [])) as merchant_categories
        {{ each_category('payments', 'merchant_category', 'payments', condition="status = 'approved'") }}
        {{ each_category('payments', 'merchant_category', 'amount_paid', condition="status = 'approved'", measure='amount') }}
    from transactions
    group by all
)

select * from aggregated_per_user_day
{{ in_storage_order() }}
