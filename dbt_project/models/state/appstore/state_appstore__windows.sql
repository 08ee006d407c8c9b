{{ config(location=state_location()) }}
-- depends_on: {{ ref('state_appstore__late') }}
-- depends_on: {{ ref('state_appstore__maxima') }}
-- depends_on: {{ ref('state_appstore__values') }}

{{ rolling_window_state('appstore') }}
