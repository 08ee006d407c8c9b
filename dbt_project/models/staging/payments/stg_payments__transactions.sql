with source as (
    select * from {{ source('bronze', 'payments') }}
),

renamed as (
    select
        {{ event_columns('paid_at') }},
        merchant_category,
        amount,
        status
    from source
)

select * from renamed
