{{ config(location=snapshot_location('credit')) }}

{#- Windowed activity from the app's loan records and the bank's repayment feed, plus each user's loan
    book as of the day (`state` in the spec): what was outstanding, how late, what the bank confirmed. -#}

{%- set as_of = "date '" ~ var('as_of') ~ "'" %}

with windowed as (
    {{ windowed_features(['int_loans__user_daily', 'int_bank_repayments__user_daily']) }}
),

loan_events as (
    select * from {{ ref('stg_loans__loan_events') }}
    where arrived_on <= {{ as_of }} and event_date <= {{ as_of }}  {#- a clock a few minutes ahead #}
),

bank_repayments as (
    select * from {{ ref('stg_bank_repayments__repayments') }}
    where arrived_on <= {{ as_of }} and event_date <= {{ as_of }}
),

repaid_instalments as (
    select distinct loan_id, instalment_no from loan_events where event_type = 'repayment'
),

{#- An overdue instalment is open until a repayment of it arrives; it fell due `days_past_due` days
    before the notice. -#}
open_overdue as (
    select notices.loan_id, max({{ as_of }} - (notices.event_date - notices.days_past_due)) as days_late
    from loan_events as notices
    anti join repaid_instalments using (loan_id, instalment_no)
    where notices.event_type = 'overdue'
    group by all
),

loans as (
    select
        user_key,
        loan_id,
        min(event_date) filter (where event_type = 'disbursement') as disbursed_on,
        max(term_months) filter (where event_type = 'disbursement') as term_months,
        sum(amount) filter (where event_type = 'disbursement') as amount_disbursed,
        sum(amount) filter (where event_type = 'repayment') as amount_repaid,
        count(distinct instalment_no) filter (where event_type = 'repayment') as instalments_repaid,
        max(days_past_due) as days_past_due_max,
        bool_or(event_type = 'overdue') as has_been_overdue
    from loan_events
    group by all
    having disbursed_on is not null
),

{#- Repayments the bank has not booked once its lag has passed (the reconciliation's own table): they
    count as paid here, the lender's ledger decides, and are counted as a feature of their own. -#}
unconfirmed_repayments as (
    select user_key, count(*) as repayments_unconfirmed_by_bank_now
    from {{ ref('rec_bank_repayments__unconfirmed') }}
    group by all
),

loan_book as (
    select
        user_key,
        count(*) filter (where instalments_repaid < term_months) as loans_active_now,
        sum(term_months - instalments_repaid) filter (where instalments_repaid < term_months)
            as outstanding_instalments_now,
        coalesce(max(open_overdue.days_late), 0) as days_past_due_now,
        greatest(coalesce(max(days_past_due_max), 0), coalesce(max(open_overdue.days_late), 0))
            as days_past_due_max_ever,
        sum(amount_disbursed) as amount_disbursed_total,
        coalesce(sum(amount_repaid), 0) as amount_repaid_total,
        count(*) filter (where instalments_repaid >= term_months) as loans_paid_off_total,
        count(*) filter (where has_been_overdue and open_overdue.loan_id is null) as loans_cured_total,
        date_sub('month', min(disbursed_on), {{ as_of }}) as months_on_book_now  {#- whole months #}
    from loans
    left join open_overdue using (loan_id)
    group by all
)

select
    windowed.*,
    cast(coalesce(loan_book.loans_active_now, 0) as integer) as credit__loans_active_now,
    cast(coalesce(loan_book.outstanding_instalments_now, 0) as integer) as credit__outstanding_instalments_now,
    cast(coalesce(loan_book.days_past_due_now, 0) as integer) as credit__days_past_due_now,
    cast(coalesce(loan_book.days_past_due_max_ever, 0) as integer) as credit__days_past_due_max_ever,
    cast(coalesce(unconfirmed_repayments.repayments_unconfirmed_by_bank_now, 0) as integer)
        as credit__repayments_unconfirmed_by_bank_now,
    cast(coalesce(loan_book.amount_disbursed_total, 0) as float) as credit__amount_disbursed_total,
    cast(coalesce(loan_book.amount_repaid_total, 0) as float) as credit__amount_repaid_total,
    cast(coalesce(loan_book.loans_paid_off_total, 0) as integer) as credit__loans_paid_off_total,
    cast(coalesce(loan_book.loans_cured_total, 0) as integer) as credit__loans_cured_total,
    cast(loan_book.months_on_book_now as integer) as credit__months_on_book_now
from windowed
left join loan_book using (user_key)
left join unconfirmed_repayments using (user_key)
order by user_key
