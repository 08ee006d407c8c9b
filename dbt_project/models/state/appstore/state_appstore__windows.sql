{{ config(location=state_location(var('as_of'))) }}

{{ rolling_window_state('appstore', 'int_appstore__user_daily') }}
