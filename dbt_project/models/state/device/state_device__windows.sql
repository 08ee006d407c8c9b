{{ config(location=state_location(var('as_of'))) }}

{{ rolling_window_state('device', 'int_device__user_daily') }}
