{{ config(location=state_location(var('as_of'))) }}

{{ rolling_window_state('payments', 'int_payments__user_daily') }}
