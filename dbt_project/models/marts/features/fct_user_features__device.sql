{{ config(location=snapshot_location('device')) }}

{{ windowed_features('int_device__user_daily') }}
