{{ config(location=state_location()) }}
-- depends_on: {{ ref('state_credit__late') }}
-- depends_on: {{ ref('state_credit__maxima') }}

{{ rolling_window_state('credit') }}
