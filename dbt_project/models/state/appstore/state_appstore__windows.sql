{{ config(location=state_location(var('as_of'))) }}
-- depends_on: {{ ref('state_appstore__late') }}
-- depends_on: {{ ref('state_appstore__maxima') }}
-- depends_on: {{ ref('state_appstore__values') }}

{{ rolling_window_state('appstore') }}
