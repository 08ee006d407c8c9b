"""Run GX expectation suites over pandas frames through checkpoints whose action, AlertOnFailure (a GX
ValidationAction), turns each failed expectation into a Millet alert at its check's severity, linking to
the day's report and to the validation's Data Docs page; the stage then builds those pages.

Each expectation names its check in `meta["check"]`; the severities map checks to "critical" (stops
publication) or "warning". The GX project lives under the data root (quality/gx/); suites are rebuilt from
the thresholds in expectations/ on every run (add_or_update), so that file stays their one source, and
validation results accumulate there, so the Data Docs index lists every night's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from millet.settings import Settings

# (check, the failed expectation's result) -> (summary, counts, sample keys) for the alert
Describe = Callable[[str, Any], tuple[str, dict, list[str]]]


@dataclass
class Outcome:
    """A validation's failed checks, split by severity (check -> GX's result), and its Data Docs page."""
    failed: dict[str, Any] = field(default_factory=dict)
    warnings: dict[str, Any] = field(default_factory=dict)
    evaluated: int = 0
    docs: str | None = None


def gx_project_dir(settings: Settings) -> Path:
    """GX's own project folder (gx/ inside it): suites, checkpoints and validation results as GX keeps them,
    and the Data Docs site (gx/uncommitted/data_docs/local_site/index.html) that lists every validation."""
    return settings.root / "quality"


class GxProject:
    """The GX file project under the data root, for one stage of a night: run its checkpoints, then build
    their Data Docs pages and the site's index once (per checkpoint, the index rebuild cost seconds)."""

    def __init__(self, settings: Settings):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.settings = settings
        self.context = gx.get_context(mode="file", project_root_dir=str(gx_project_dir(settings)))
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)  # logs, not a terminal
        self._validated: list = []

    def run_checkpoint(self, name: str, build_suite, frame, *, dataset: str, day: str, prefix: str,
                       severity: dict[str, str], describe: Describe, index_column: str | None = None
                       ) -> Outcome:
        """Validate `frame` against `build_suite()` (GX builds suites only inside an active context) through
        a checkpoint whose action alerts each failure (check `<prefix>_<check>`, e.g. feed_volume, for
        `dataset` on `day`). With `index_column`, each failed result lists that column's values of the rows
        that broke it (GX's unexpected_index_list)."""
        import great_expectations as gx

        from millet.quality.gx_actions import AlertOnFailure, bound, docs_page, failed_checks

        source = self.context.data_sources.add_or_update_pandas(name=f"{name}_source")
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name="whole")
        suite = self.context.suites.add_or_update(build_suite())
        validation = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch, suite=suite))
        result_format = ({"result_format": "COMPLETE", "unexpected_index_column_names": [index_column]}
                         if index_column else "SUMMARY")
        with bound(describe, self.settings) as binding:
            alert = AlertOnFailure(name="alert", dataset=dataset, logical_date=day, prefix=prefix,
                                   severity=severity, binding=binding)
            checkpoint = self.context.checkpoints.add_or_update(gx.Checkpoint(
                name=f"{name}_gate", validation_definitions=[validation], result_format=result_format,
                actions=[alert]))
            result = checkpoint.run(batch_parameters={"dataframe": frame})
        (identifier, run), = result.run_results.items()
        self._validated += [identifier, identifier.expectation_suite_identifier]
        outcome = Outcome(evaluated=len(run.results), docs=docs_page(self.context, identifier))
        for check, failed in failed_checks(run.results):
            (outcome.failed if severity[check] == "critical" else outcome.warnings)[check] = failed
        return outcome

    def build_data_docs(self) -> None:
        """The pages of this stage's validations and the site's index (gx/uncommitted/data_docs/)."""
        from millet.quality.gx_actions import DOCS_SITE

        if self._validated:
            self.context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=self._validated)
