{{ config(location=state_location()) }}

{{ window_maxima_state('forum') }}
