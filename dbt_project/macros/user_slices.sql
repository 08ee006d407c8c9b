{#- User slices: a state model's query run once per range of user keys, each range written to its own
    file, and the files then concatenated in key order into the model's file. The rows are those of one
    query (every state is computed per user), with about 1/N of its hash tables: a re-base at 1M users
    aggregates ~700 window totals per user, which one query spilled past the free disk.

    var('user_slices') (the setting state_user_slices; 1: one query) applies to the models whose config
    has meta.user_sliced (models/state). Ranges of the key, not hashes of it, so that slices written in
    key order concatenate into the file one query writes (each state is sorted by user_key first).
    Pseudonymous keys are hex HMACs, so ranges of their first four hex digits hold about equal shares;
    the ranges cover every string whatever the keys look like. The `external` materialization sets the
    bounds of each slice in DuckDB variables (user_slice_from, user_slice_to) before running it. -#}

{#- How many slices this model is run in. -#}
{% macro user_slices() %}
{%- if not (config.get('meta') or {}).get('user_sliced') -%}
  {{ return(1) }}
{%- endif -%}
{{ return(var('user_slices') | int) }}
{% endmacro %}


{#- The key ranges, [from, to): the first from '' (below every key), the last to none (no bound). -#}
{% macro user_slice_bounds(slices) %}
{%- set cuts = [''] -%}
{%- for k in range(1, slices) -%}
  {%- do cuts.append('%04x' % ((k * 65536) // slices)) -%}
{%- endfor -%}
{%- set bounds = [] -%}
{%- for k in range(slices) -%}
  {%- do bounds.append((cuts[k], cuts[k + 1] if k + 1 < slices else none)) -%}
{%- endfor -%}
{{ return(bounds) }}
{% endmacro %}


{#- ' and <the row's user is in the slice>' in a sliced model's reads; '' elsewhere. -#}
{% macro and_in_user_slice(column='user_key') %}
{%- if user_slices() == 1 -%}
  {{ return('') }}
{%- endif -%}
{{ return(" and " ~ column ~ " >= getvariable('user_slice_from') and (getvariable('user_slice_to') is null or "
          ~ column ~ " < getvariable('user_slice_to'))") }}
{% endmacro %}
