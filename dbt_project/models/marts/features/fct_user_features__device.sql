{{ config(location=snapshot_location('device')) }}

{{ windowed_features('state_device__windows') }}
