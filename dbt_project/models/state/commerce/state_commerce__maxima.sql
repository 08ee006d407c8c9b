{{ config(location=state_location(var('as_of'))) }}

{{ window_maxima_state('commerce') }}
