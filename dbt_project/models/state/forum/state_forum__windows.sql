{{ config(location=state_location(var('as_of'))) }}

{{ rolling_window_state('forum', 'int_forum__user_daily') }}
