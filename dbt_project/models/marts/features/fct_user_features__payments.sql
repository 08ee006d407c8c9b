{{ config(location=snapshot_location('payments')) }}

{{ windowed_features('state_payments__windows') }}
