{{ config(unique_key='arrived_on') }}

{#- One row per user, arrival day and event day: the partial totals every device feature sums up. -#}

with sessions as (
    {{ arrivals('stg_device__sessions') }}
),

aggregated_per_user_day as (
    select
        user_key,
        arrived_on,
        event_date,
        count(*) as sessions,
        sum(screen_seconds) as screen_seconds_sum,
        max(screen_seconds) as screen_seconds_max,
        sum(app_launches) as app_launches_sum,
        max(app_launches) as app_launches_max,
        count(*) filter (where is_night) as night_sessions,
        count(*) filter (where is_charging) as charging_sessions,
        count(*) filter (where is_sim_changed) as sim_changes,
        count(*) filter (where is_city_changed) as city_changes
        {{ each_category('device', 'top_app_category', 'sessions') }}
        {{ each_category('device', 'top_app_category', 'screen_seconds', measure='screen_seconds') }}
    from sessions
    group by all
)

select * from aggregated_per_user_day
{{ in_storage_order() }}
