{{ config(location=state_location(var('as_of'))) }}

{{ rolling_window_state('credit', ['int_loans__user_daily', 'int_bank_repayments__user_daily']) }}
