{#- dbt-duckdb 1.11.1's `external` materialization, copied unchanged but for three things. An empty result
    is written as a zero-row Parquet file with the model's columns. Upstream writes one row of NULLs
    (a workaround for empty writes to S3, and for CSV/JSON, which need a row to carry a schema) and
    hides it behind the view; but the snapshot FILES are what Feast and the quality gate read, so a
    family with no activity as of a day (credit before the first loan) published a user with a NULL
    key. The NULL row is kept where upstream needs it: CSV, JSON and partitioned Parquet.
    dbt-duckdb#848 / #849 propose the same change. A single Parquet file is written straight from the
    query, and the as-of day is set for it, or each day of a history build in turn (see below). A
    project materialization overrides the adapter's of the same name. -#}

{% materialization external, adapter="duckdb", supported_languages=['sql', 'python'] %}

  {%- set location = render(config.get('location', default=external_location(this, config))) -%})
  {%- set rendered_options = render_write_options(config) -%}
  {%- set write_options = adapter.external_write_options(location, rendered_options) -%}

  {%- set format = config.get('format') -%}
  {%- set allowed_formats = ['csv', 'parquet', 'json'] -%}
  {%- if format -%}
      {%- if format not in allowed_formats -%}
          {{ exceptions.raise_compiler_error("Invalid format: " ~ format ~ ". Allowed formats are: " ~ allowed_formats | join(', ')) }}
      {%- endif -%}
  {%- else -%}
    {#- read the files back in the format that external_write_options picked for the write -#}
    {%- set format = rendered_options['format'] | lower -%}
    {%- set format = format if format in allowed_formats else 'parquet' -%}
  {%- endif -%}

  {%- set read_location = adapter.external_read_location(location, rendered_options) -%}
  {%- set parquet_read_options = config.get('parquet_read_options', {'union_by_name': False}) -%}
  {%- set json_read_options = config.get('json_read_options', {'auto_detect': True}) -%}
  {%- set csv_read_options = config.get('csv_read_options', {'auto_detect': True}) -%}
  {#- DuckDB detects compression from a lower-case extension only, so pass the write compression to the readers -#}
  {%- if rendered_options.get('compression') and 'compression' not in json_read_options -%}
    {%- set json_read_options = dict(json_read_options, compression=rendered_options['compression']) -%}
  {%- endif -%}
  {%- if rendered_options.get('compression') and 'compression' not in csv_read_options -%}
    {%- set csv_read_options = dict(csv_read_options, compression=rendered_options['compression']) -%}
  {%- endif -%}

  -- set language - python or sql
  {%- set language = model['language'] -%}

  {%- set target_relation = this.incorporate(type='view') %}

  -- Continue as normal materialization
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set temp_relation =  make_intermediate_relation(this.incorporate(type='table'), suffix='__dbt_tmp') -%}
  {%- set intermediate_relation =  make_intermediate_relation(target_relation, suffix='__dbt_int') -%}
  -- the intermediate_relation should not already exist in the database; get_relation
  -- will return None in that case. Otherwise, we get a relation that we can drop
  -- later, before we try to use this name for the current operation
  {%- set preexisting_temp_relation = load_cached_relation(temp_relation) -%}
  {%- set preexisting_intermediate_relation = load_cached_relation(intermediate_relation) -%}
  /*
      See ../view/view.sql for more information about this relation.
  */
  {%- set backup_relation_type = 'table' if existing_relation is none else existing_relation.type -%}
  {%- set backup_relation = make_backup_relation(target_relation, backup_relation_type) -%}
  -- as above, the backup_relation should not already exist
  {%- set preexisting_backup_relation = load_cached_relation(backup_relation) -%}
  -- grab current tables grants config for comparision later on
  {% set grant_config = config.get('grants') %}

  -- drop the temp relations if they exist already in the database
  {{ drop_relation_if_exists(preexisting_intermediate_relation) }}
  {{ drop_relation_if_exists(preexisting_temp_relation) }}
  {{ drop_relation_if_exists(preexisting_backup_relation) }}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}

  -- `BEGIN` happens here:
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {#- millet: a single Parquet file is written straight from the query (COPY (query) TO ...), so each
      model's rows are not first stored as a table in the warehouse file and read back: for the wide state
      and snapshot models that was about half of each model's time. Other formats as upstream. -#}
  {%- set straight_to_file = format == 'parquet' and 'partition_by' not in rendered_options
                             and language == 'sql' -%}
  {%- set placeholder_row = false -%}
  {% if straight_to_file %}
    {%- set query -%}
(
{{ compiled_code }}
)
    {%- endset %}
    {#- millet: the query reads its as-of day from a DuckDB variable (macros/as_of.sql). A model kept per
        day (`/dt=<as_of>/` in its location) is written for every day of a history build in turn, each
        day's file before the next day's, which may read it; the view below points at the last. -#}
    {%- set days = run_days() if '/dt=' ~ run_var('as_of') ~ '/' in location else [run_var('as_of')] -%}
    {%- for day in days %}
    {% call statement('as_of_' ~ loop.index) -%}
      set variable as_of = date '{{ day }}'
    {%- endcall %}
    {{ write_in_user_slices(query, location_on(location, day) if days | length > 1 else location, write_options) }}
    {%- endfor %}
  {% else %}
    {% call statement('as_of') -%}
      set variable as_of = date '{{ run_var('as_of') }}'
    {%- endcall %}
    -- build model
    {% call statement('create_table', language=language) -%}
      {{- create_table_as(False, temp_relation, compiled_code, language) }}
    {%- endcall %}

    -- check if relation is empty
    {%- set count_query -%}
      select count(*) as row_count from {{ temp_relation }}
    {%- endset -%}
    {%- set row_count = run_query(count_query) -%}
    {#- Parquet keeps its schema in a zero-row file; a partitioned write of nothing writes no file. -#}
    {%- set placeholder_row = row_count[0][0] == 0
          and (format != 'parquet' or 'partition_by' in rendered_options) -%}

    -- if relation is empty, write a non-empty table with column names and null values
    -- (millet: unless it is written as one Parquet file, which holds the columns with zero rows)
    {% call statement('main', language='sql') -%}
      {% if placeholder_row %}
      insert into {{ temp_relation }} values (
        {%- for col in get_columns_in_relation(temp_relation) -%}
        NULL,
        {%- endfor -%}
      )
      {% endif %}
    {%- endcall %}

    -- write a temp relation into file
    {{ write_to_file(temp_relation, location, write_options) }}
  {% endif %}

-- create a view on top of the location
  {% call statement('main', language='sql') -%}
    {% if format == 'json' %}
      create or replace view {{ intermediate_relation }} as (
        select * from read_json('{{ read_location }}'
        {%- for key, value in json_read_options.items() -%}
          , {{ key }}=
          {%- if value is string -%}
            '{{ value }}'
          {%- else -%}
            {{ value }}
          {%- endif -%}
        {%- endfor -%}
        )
        -- if relation is empty, filter by all columns having null values
        {% if placeholder_row %}
          where 1
          {%- for col in get_columns_in_relation(temp_relation) -%}
            {{ '' }} AND "{{ col.column }}" is not NULL
          {%- endfor -%}
        {% endif %}
      );
    {% elif format == 'parquet' %}
      create or replace view {{ intermediate_relation }} as (
        select * from read_parquet('{{ read_location }}'
        {%- for key, value in parquet_read_options.items() -%}
          , {{ key }}=
          {%- if value is string -%}
            '{{ value }}'
          {%- else -%}
            {{ value }}
          {%- endif -%}
        {%- endfor -%}
        )
        -- if relation is empty, filter by all columns having null values
        {% if placeholder_row %}
          where 1
          {%- for col in get_columns_in_relation(temp_relation) -%}
            {{ '' }} AND "{{ col.column }}" is not NULL
          {%- endfor -%}
        {% endif %}
      );
    {% elif format == 'csv' %}
    create or replace view {{ intermediate_relation }} as (
      select * from read_csv('{{ read_location }}'
      {%- for key, value in csv_read_options.items() -%}
        , {{ key }}=
        {%- if value is string -%}
          '{{ value }}'
        {%- else -%}
          {{ value }}
        {%- endif -%}
      {%- endfor -%}
      )
      -- if relation is empty, filter by all columns having null values
      {% if placeholder_row %}
        where 1
        {%- for col in get_columns_in_relation(temp_relation) -%}
          {{ '' }} AND "{{ col.column }}" is not NULL
        {%- endfor -%}
      {% endif %}
    );
    {% endif %}
  {%- endcall %}

  -- cleanup
  {% if existing_relation is not none %}
      {{ adapter.rename_relation(existing_relation, backup_relation) }}
  {% endif %}

  {{ adapter.rename_relation(intermediate_relation, target_relation) }}

  {{ run_hooks(post_hooks, inside_transaction=True) }}

  {% set should_revoke = should_revoke(existing_relation, full_refresh_mode=True) %}
  {% do apply_grants(target_relation, grant_config, should_revoke=should_revoke) %}

  {% do persist_docs(target_relation, model) %}

  -- `COMMIT` happens here
  {{ adapter.commit() }}

  -- finally, drop the existing/backup relation after the commit
  {{ drop_relation_if_exists(backup_relation) }}
  {{ drop_relation_if_exists(temp_relation) }}

  -- register table into glue
  {%- set plugin_name = config.get('plugin') -%}
  {%- set glue_register = config.get('glue_register', default=false) -%}
  {%- set partition_columns = config.get('partition_columns', []) -%}
  {% if plugin_name is not none or glue_register is true %}
    {% if glue_register %}
      {# legacy hack to set the glue database name, deprecate this #}
      {%- set plugin_name = 'glue|' ~ config.get('glue_database', 'default') -%}
    {% endif %}
    {% do store_relation(plugin_name, target_relation, location, format, config) %}
  {% endif %}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}

{% endmaterialization %}


{#- millet: the query written to `target`, whole, or (macros/user_slices.sql) one file per range of user
    keys in var('user_slices_dir') (Millet makes it before dbt runs), then concatenated in key order
    into `target`. -#}
{% macro write_in_user_slices(query, target, write_options) %}
{%- set slices = user_slices() -%}
{%- if slices == 1 -%}
  {{ write_to_file(query, target, write_options) }}
{%- else -%}
  {%- set parts = [] -%}
  {%- for lower, upper in user_slice_bounds(slices) %}
    {% call statement('user_slice_' ~ loop.index) -%}
      set variable user_slice_from = '{{ lower }}';
      set variable user_slice_to = {{ "'" ~ upper ~ "'" if upper else 'cast(null as varchar)' }}
    {%- endcall %}
    {%- set part = var('user_slices_dir') ~ '/' ~ model.name ~ '-' ~ loop.index0 ~ '.parquet' -%}
    {{ write_to_file(query, part, write_options) }}
    {%- do parts.append("'" ~ part ~ "'") -%}
  {%- endfor %}
  {{ write_to_file("(select * from read_parquet([" ~ parts | join(', ') ~ "]))", target, write_options) }}
{%- endif -%}
{% endmacro %}
