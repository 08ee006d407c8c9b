{{ config(location=state_location(var('as_of'))) }}
-- depends_on: {{ ref('state_device__late') }}
-- depends_on: {{ ref('state_device__maxima') }}

{{ rolling_window_state('device') }}
