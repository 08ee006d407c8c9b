with source as (
    select * from {{ source('bronze', 'appstore') }}
),

renamed as (
    select
        {{ event_columns('acted_at') }},
        action,
        app_id,
        category,
        price
    from source
)

select * from renamed
