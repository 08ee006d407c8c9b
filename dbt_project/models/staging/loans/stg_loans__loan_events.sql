with source as (
    select * from {{ source('bronze', 'loans') }}
),

renamed as (
    select
        {{ event_columns('happened_at') }},
        loan_id,
        event_type,
        product,
        amount,
        term_months,
        approved as is_approved,
        instalment_no,
        days_past_due
    from source
)

select * from renamed
