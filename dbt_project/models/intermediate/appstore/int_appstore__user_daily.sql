{{ config(unique_key='arrived_on') }}

with app_events as (
    {{ arrivals('stg_appstore__app_events') }}
),

aggregated_per_user_day as (
    select
        user_key,
        arrived_on,
        event_date,
        count(*) as app_events,
        count(*) filter (where action = 'install') as installs,
        count(*) filter (where action = 'uninstall') as uninstalls,
        count(*) filter (where action = 'purchase') as purchases,
        sum(price) filter (where action = 'purchase') as purchase_amount_sum,
        max(price) filter (where action = 'purchase') as purchase_amount_max,
        list_sort(coalesce(list(distinct app_id) filter (where action = 'install'), [])) as installed_apps,
        list_sort(coalesce(list(distinct category) filter (where action = 'install'), [])) as installed_categories
        {{ each_category('appstore', 'category', 'installs', condition="action = 'install'") }}
        {{ each_category('appstore', 'category', 'uninstalls', condition="action = 'uninstall'") }}
        {{ each_category('appstore', 'category', 'purchases', condition="action = 'purchase'") }}
    from app_events
    group by all
)

select * from aggregated_per_user_day
{{ in_storage_order() }}
