{{ config(location=state_location()) }}

{#- Every instalment that was repaid or fell overdue, as of the day: repaid (1) or not, and the day it
    fell due according to its overdue notices (a notice says how many days past due it is). -#}

{{ carried_state('stg_loans__loan_events', ['user_key', 'loan_id', 'instalment_no'], [
    ['repaid', 'max', "case when event_type = 'repayment' then 1 else 0 end"],
    ['overdue_since', 'min', "case when event_type = 'overdue' then cast(" ~ dbt.dateadd('day', '-days_past_due', 'event_date') ~ " as date) end"],
], where="event_type in ('repayment', 'overdue')") }}
