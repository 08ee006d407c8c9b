{{ config(location=snapshot_location('commerce')) }}

{{ windowed_features('state_commerce__windows') }}
