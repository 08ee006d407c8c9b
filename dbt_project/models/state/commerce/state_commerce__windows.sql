{{ config(location=state_location(var('as_of'))) }}

{{ rolling_window_state('commerce', 'int_commerce__user_daily') }}
