with source as (
    select * from {{ source('bronze', 'bank_repayments') }}
),

renamed as (
    select
        {{ event_columns('booked_at') }},
        loan_id,
        instalment_no,
        amount
    from source
)

select * from renamed
