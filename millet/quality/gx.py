"""Run one GX expectation suite over a pandas frame through a checkpoint, in an ephemeral context."""

from __future__ import annotations


def run_checkpoint(name: str, build_suite, frame, index_column: str | None = None) -> list:
    """The validation results (one per expectation) for `frame` of the suite `build_suite()` returns (GX
    builds suites only inside an active context). With `index_column`, each failed result lists that
    column's values of the rows that broke it (GX's unexpected_index_list)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # task logs, not a terminal
    batch = (
        context.data_sources.add_pandas(name=f"{name}_source")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe(name="whole")
    )
    suite = context.suites.add(build_suite())
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}_validation", data=batch, suite=suite)
    )
    result_format = ({"result_format": "COMPLETE", "unexpected_index_column_names": [index_column]}
                     if index_column else "SUMMARY")
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=f"{name}_gate", validation_definitions=[validation], result_format=result_format)
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    return [r for run in result.run_results.values() for r in run.results]
