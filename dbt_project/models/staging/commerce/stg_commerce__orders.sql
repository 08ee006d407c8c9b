with source as (
    select * from {{ source('bronze', 'commerce') }}
),

renamed as (
    select
        user_key,
        event_id,
        order_id,
        event_ts as ordered_at,
        cast(event_ts as date) as event_date,
        cast(dt as date) as arrived_on,
        amount,
        items,
        payment_type,
        coupon_used as is_coupon_used,
        status
    from source
)

select * from renamed
