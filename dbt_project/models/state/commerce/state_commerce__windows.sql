{{ config(location=state_location()) }}
-- depends_on: {{ ref('state_commerce__late') }}
-- depends_on: {{ ref('state_commerce__maxima') }}

{{ rolling_window_state('commerce') }}
