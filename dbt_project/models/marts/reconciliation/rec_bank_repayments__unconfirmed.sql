{{ config(location=day_location(millet_setting('MILLET_RECONCILIATION_DIR'))) }}

{#- Every repayment the lender recorded (the app's ledger) that the funding bank has not booked, once the
    bank's booking lag has passed: the divergence that in 2019 got paying borrowers reported overdue.
    Kept per as-of day; the credit family counts it per user, the reconciliation check alerts on it. -#}

{%- set as_of = as_of_day() %}

with repayments as (
    select user_key, loan_id, instalment_no, amount, event_date as repaid_on
    from {{ ref('stg_loans__loan_events') }}
    where event_type = 'repayment' and arrived_on <= {{ as_of }} and event_date <= {{ as_of }}
),

booked as (
    select loan_id, instalment_no
    from {{ ref('stg_bank_repayments__repayments') }}
    where arrived_on <= {{ as_of }} and event_date <= {{ as_of }}
)

select
    repayments.user_key,
    repayments.loan_id,
    repayments.instalment_no,
    repayments.amount,
    repayments.repaid_on,
    cast({{ as_of }} - repayments.repaid_on as integer) as days_unconfirmed
from repayments
anti join booked using (loan_id, instalment_no)
where repayments.repaid_on < {{ as_of }} - {{ var('bank_booking_lag_days') }}
order by repayments.user_key, repayments.loan_id, repayments.instalment_no
