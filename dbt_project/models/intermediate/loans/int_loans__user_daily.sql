{{ config(unique_key='arrived_on') }}

with loan_events as (
    {{ arrivals('stg_loans__loan_events') }}
),

aggregated_per_user_day as (
    select
        user_key,
        arrived_on,
        event_date,
        count(*) filter (where event_type = 'application') as applications,
        sum(amount) filter (where event_type = 'application') as amount_applied_sum,
        count(*) filter (where event_type = 'decision') as decisions,
        count(*) filter (where event_type = 'decision' and is_approved) as approvals,
        count(*) filter (where event_type = 'decision' and not is_approved) as rejections,
        count(*) filter (where event_type = 'disbursement') as disbursements,
        sum(amount) filter (where event_type = 'disbursement') as amount_disbursed_sum,
        count(*) filter (where event_type = 'repayment') as app_repayments,
        sum(amount) filter (where event_type = 'repayment') as amount_app_repaid_sum,
        count(*) filter (where event_type = 'repayment' and days_past_due = 0) as repayments_on_time,
        count(*) filter (where event_type = 'repayment' and days_past_due > 0) as repayments_late,
        count(*) filter (where event_type = 'overdue') as overdue_notices,
        max(days_past_due) as days_past_due_max
        {{ each_category('loans', 'product', 'applications', condition="event_type = 'application'") }}
        {{ each_category('loans', 'product', 'disbursements', condition="event_type = 'disbursement'") }}
    from loan_events
    group by all
)

select * from aggregated_per_user_day
{{ in_storage_order() }}
