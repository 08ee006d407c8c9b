with source as (
    select * from {{ source('bronze', 'device') }}
),

renamed as (
    select
        {{ event_columns('session_at') }},
        hour(event_ts) < 5 as is_night,
        screen_seconds,
        app_launches,
        top_app_category,
        is_charging,
        sim_changed as is_sim_changed,
        city_changed as is_city_changed
    from source
)

select * from renamed
