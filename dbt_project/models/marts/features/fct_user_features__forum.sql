{{ config(location=snapshot_location('forum')) }}

{{ windowed_features('state_forum__windows') }}
