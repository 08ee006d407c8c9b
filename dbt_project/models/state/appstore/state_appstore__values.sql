{{ config(location=state_location(var('as_of'))) }}

{{ window_values_state('appstore') }}
