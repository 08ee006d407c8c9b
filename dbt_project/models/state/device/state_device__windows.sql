{{ config(location=state_location()) }}
-- depends_on: {{ ref('state_device__late') }}
-- depends_on: {{ ref('state_device__maxima') }}

{{ rolling_window_state('device') }}
