{{ config(location=state_location(var('as_of'))) }}

{{ late_rows_state('commerce') }}
