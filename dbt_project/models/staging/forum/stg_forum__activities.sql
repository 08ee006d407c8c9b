with source as (
    select * from {{ source('bronze', 'forum') }}
),

renamed as (
    select
        {{ event_columns('acted_at') }},
        action,
        board,
        account_age_days
    from source
)

select * from renamed
