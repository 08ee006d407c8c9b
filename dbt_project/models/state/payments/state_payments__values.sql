{{ config(location=state_location()) }}

{{ window_values_state('payments') }}
