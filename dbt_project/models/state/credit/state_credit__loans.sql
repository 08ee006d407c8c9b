{{ config(location=state_location()) }}

{#- Every loan ever made, as of the day: when it was paid out, its term, what was lent and repaid (fixed
    point, as the window totals), the worst lateness seen and whether it ever fell overdue. -#}

{{ carried_state('stg_loans__loan_events', ['user_key', 'loan_id'], [
    ['disbursed_on', 'min', "case when event_type = 'disbursement' then event_date end"],
    ['term_months', 'max', "case when event_type = 'disbursement' then term_months end"],
    ['amount_disbursed', 'sum', "case when event_type = 'disbursement' then " ~ fixed_point('amount') ~ " else 0 end"],
    ['amount_repaid', 'sum', "case when event_type = 'repayment' then " ~ fixed_point('amount') ~ " else 0 end"],
    ['days_past_due_max', 'max', 'days_past_due'],
    ['has_been_overdue', 'max', "case when event_type = 'overdue' then 1 else 0 end"],
]) }}
