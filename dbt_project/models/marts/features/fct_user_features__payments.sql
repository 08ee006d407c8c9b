{{ config(location=snapshot_location('payments')) }}

{{ windowed_features('int_payments__user_daily') }}
