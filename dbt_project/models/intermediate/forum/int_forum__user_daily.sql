{{ config(unique_key='arrived_on') }}

with activities as (
    {{ arrivals('stg_forum__activities') }}
),

aggregated_per_user_day as (
    select
        user_key,
        arrived_on,
        event_date,
        count(*) filter (where action <> 'reported') as actions,
        list_sort(coalesce(list(distinct board) filter (where action <> 'reported'), [])) as boards,
        max(account_age_days) as account_age_days_max
        {{ each_category('forum', 'action', 'actions') }}
    from activities
    group by all
)

select * from aggregated_per_user_day
{{ in_storage_order() }}
