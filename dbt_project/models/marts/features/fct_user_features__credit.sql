{{ config(location=snapshot_location('credit')) }}

{#- Windowed activity from the app's loan records and the bank's repayment feed, plus each borrower's loan
    book as of the day (`state` in the spec): what was outstanding, how late, what the bank confirmed.
    Every person who ever had a loan is here, however long ago their last event: the loan book comes
    from the carried state of every loan (models/state/credit), not from the windows. -#}

{%- set as_of = as_of_day() %}

with instalments as (
    select
        loan_id,
        sum(repaid) as instalments_repaid,
        {#- An overdue instalment is open until a repayment of it arrives. #}
        min(case when repaid = 0 then overdue_since end) as open_overdue_since
    from {{ day_file('state_credit__instalments') }}
    group by loan_id
),

{#- Repayments the bank has not booked once its lag has passed (the reconciliation's own table): they
    count as paid here, the lender's ledger decides, and are counted as a feature of their own. -#}
unconfirmed_repayments as (
    select user_key, count(*) as repayments_unconfirmed_by_bank_now
    from {{ day_file('rec_bank_repayments__unconfirmed') }}
    group by user_key
),

loan_book as (
    select
        user_key,
        sum(case when coalesce(instalments_repaid, 0) < term_months then 1 else 0 end) as loans_active_now,
        sum(case when coalesce(instalments_repaid, 0) < term_months
                 then term_months - coalesce(instalments_repaid, 0) end) as outstanding_instalments_now,
        coalesce(max({{ dbt.datediff('open_overdue_since', as_of, 'day') }}), 0) as days_past_due_now,
        greatest(coalesce(max(days_past_due_max), 0),
                 coalesce(max({{ dbt.datediff('open_overdue_since', as_of, 'day') }}), 0)) as days_past_due_max_ever,
        sum(amount_disbursed) / {{ state_units() }}.0 as amount_disbursed_total,
        sum(amount_repaid) / {{ state_units() }}.0 as amount_repaid_total,
        sum(case when coalesce(instalments_repaid, 0) >= term_months then 1 else 0 end) as loans_paid_off_total,
        sum(case when has_been_overdue = 1 and open_overdue_since is null then 1 else 0 end) as loans_cured_total,
        {{ whole_months_between('min(disbursed_on)', as_of) }} as months_on_book_now
    from {{ day_file('state_credit__loans') }}
    left join instalments using (loan_id)
    where disbursed_on is not null
    group by user_key
),

windowed as (
    {{ windowed_features('state_credit__windows', also_users='loan_book') }}
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
{#- A forgotten person's loan records are kept by law, and keep feeding the state: not the features. #}
where user_key not in (select user_key from {{ erased_users() }})
order by user_key
