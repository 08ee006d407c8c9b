{{ config(location=snapshot_location('appstore')) }}

{{ windowed_features('state_appstore__windows') }}
