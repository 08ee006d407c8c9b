{{ config(location=state_location()) }}

{{ late_rows_state('payments') }}
