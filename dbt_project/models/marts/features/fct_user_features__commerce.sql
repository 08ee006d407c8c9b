{{ config(location=snapshot_location('commerce')) }}

{{ windowed_features('int_commerce__user_daily') }}
