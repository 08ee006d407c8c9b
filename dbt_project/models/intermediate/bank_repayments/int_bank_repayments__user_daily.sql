{{ config(unique_key='arrived_on') }}

{#- The bank's own view of the same repayments: compared with the app's to catch a broken sync. -#}

with repayments as (
    {{ arrivals('stg_bank_repayments__repayments') }}
),

aggregated_per_user_day as (
    select
        user_key,
        arrived_on,
        event_date,
        count(*) as bank_repayments,
        sum(amount) as amount_bank_repaid_sum
    from repayments
    group by all
)

select * from aggregated_per_user_day
{{ in_storage_order() }}
