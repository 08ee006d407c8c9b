{{ config(location=snapshot_location('forum')) }}

{{ windowed_features('int_forum__user_daily') }}
