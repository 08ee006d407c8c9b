with source as (
    select * from {{ source('bronze', 'commerce') }}
),

renamed as (
    select
        {{ event_columns('ordered_at') }},
        order_id,
        amount,
        items,
        payment_type,
        coupon_used as is_coupon_used,
        address_changed as is_address_changed,
        status
    from source
)

select * from renamed
