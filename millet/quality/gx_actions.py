"""Millet's GX checkpoint action (imported only where a checkpoint runs: GX is heavy to import)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from great_expectations.checkpoint.actions import ValidationAction

from millet.alerts import SAMPLE_KEYS, Alert, raise_alerts, report_path

DOCS_SITE = "local_site"  # GX's default Data Docs site of a file project, whose pages alerts link to
# GX rebuilds a checkpoint's actions from their JSON fields: a function and the settings (secrets included)
# are not JSON, so they wait here, in this process only, under the key the action carries.
_BOUND: dict[str, tuple[Any, Any]] = {}


def docs_page(context, identifier) -> str | None:
    """A validation's page in the Data Docs site (a file:// URL)."""
    sites = context.get_docs_sites_urls(resource_identifier=identifier, site_name=DOCS_SITE,
                                        only_if_exists=False)  # the stage builds it after its checkpoints
    return sites[0]["site_url"] if sites else None


@contextmanager
def bound(describe, settings) -> Iterator[str]:
    """A key under which AlertOnFailure finds `describe` and `settings` while the block runs."""
    key = uuid.uuid4().hex
    _BOUND[key] = (describe, settings)
    try:
        yield key
    finally:
        del _BOUND[key]


def failed_checks(results) -> list[tuple[str, Any]]:
    """(Millet check, GX result) of each failed expectation; each expectation names its check in meta."""
    return [(r.expectation_config.meta["check"], r) for r in results if not r.success]


class AlertOnFailure(ValidationAction):
    """What follows a failed expectation: an alert at its check's severity, written to the alert log and
    delivered to every configured sink (millet.alerts), linking to the day's report and the validation's
    Data Docs page (which the stage builds once all its checkpoints ran: millet.quality.gx)."""

    type: Literal["millet_alert"] = "millet_alert"
    dataset: str
    prefix: str
    logical_date: str
    severity: dict
    binding: str  # the key of this run's describe function and settings (see `bound`)

    def run(self, checkpoint_result, action_context=None) -> dict:
        describe, settings = _BOUND[self.binding]
        context = self._resolve_context().context
        report = str(report_path(self.logical_date, settings))
        alerts = []
        for identifier, run in checkpoint_result.run_results.items():
            docs = docs_page(context, identifier)
            for check, result in failed_checks(run.results):
                summary, counts, keys = describe(check, result)
                alerts.append(Alert(severity=self.severity[check], check=f"{self.prefix}_{check}",
                                    dataset=self.dataset, logical_date=self.logical_date, summary=summary,
                                    counts=counts, sample_keys=keys[:SAMPLE_KEYS], report=report, docs=docs))
        raise_alerts(alerts, settings)
        return {"alerts": [a.id for a in alerts]}
