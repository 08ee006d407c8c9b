{{ config(location=state_location()) }}
-- depends_on: {{ ref('state_payments__late') }}
-- depends_on: {{ ref('state_payments__maxima') }}
-- depends_on: {{ ref('state_payments__values') }}

{{ rolling_window_state('payments') }}
