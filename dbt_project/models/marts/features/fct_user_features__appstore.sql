{{ config(location=snapshot_location('appstore')) }}

{{ windowed_features('int_appstore__user_daily') }}
