{{ config(location=state_location()) }}
-- depends_on: {{ ref('state_forum__late') }}
-- depends_on: {{ ref('state_forum__maxima') }}
-- depends_on: {{ ref('state_forum__values') }}

{{ rolling_window_state('forum') }}
