"""`millet docs --serve`: dbt's docs and Feast's UI on loopback, looked at in headless Chromium.

Mutations each test is there for: dbt's docs not generated (or generated without the warehouse's catalog:
no lineage to draw); Feast's UI not started, or started on another registry (no feature service page);
the command leaving Feast's UI running when it is stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from millet.serving.definitions import SERVICES, service_features
from tests.chromium import chromium, render
from tests.e2e.processes import MILLET, answers, command_line, free_port, poll

SETTLE_MS = 20_000  # virtual time for the single-page apps to fetch their JSON and draw


@contextmanager
def catalog(settings, log_path) -> Iterator[tuple[str, str]]:
    docs_port, ui_port = free_port(), free_port()
    with open(log_path, "w+") as log:
        command = [MILLET, "docs", "--serve", "--port", str(docs_port), "--feast-port", str(ui_port)]
        process = subprocess.Popen(command, env={**os.environ, **settings.millet_environ()}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        docs, ui = f"http://127.0.0.1:{docs_port}", f"http://127.0.0.1:{ui_port}"
        children: list[psutil.Process] = []
        try:
            poll(lambda: answers(f"{docs}/static_index.html") and answers(f"{ui}/"), "the catalog", 300,
                 died=lambda: process.poll() is not None and (log.seek(0) or log.read()[-3000:]))
            children = psutil.Process(process.pid).children(recursive=True)
            yield docs, ui
        finally:
            process.send_signal(signal.SIGTERM)  # as a service manager stops it
            try:
                process.wait(timeout=60)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running after the command stopped: {[command_line(p)[:200] for p in alive]}"


@pytest.mark.e2e
def test_the_catalog_shows_dbt_lineage_and_a_feast_feature_service_in_chromium(nightly, tmp_path):
    chromium()  # skip loudly before starting anything when there is no browser
    service = SERVICES[0].name
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    blank_shot, _, _ = render(blank, tmp_path)

    with catalog(nightly, tmp_path / "docs.log") as (docs, ui):
        model = "fct_user_features__device"
        lineage, lineage_dom, _ = render(f"{docs}/static_index.html#!/model/model.millet.{model}?g_v=1",
                                         tmp_path, name="lineage", settle_ms=SETTLE_MS)
        page, page_dom, _ = render(f"{ui}/p/{nightly.project}/feature-service/{service}", tmp_path,
                                   name="feature_service", settle_ms=SETTLE_MS)

    # dbt: the model's page, its lineage drawn (cytoscape's node layer), the bronze sources listed.
    assert model in lineage_dom and 'data-id="layer2-node"' in lineage_dom
    assert "bronze" in lineage_dom and "stg_device__sessions" in lineage_dom
    assert lineage.stat().st_size > 5 * blank_shot.stat().st_size
    # Feast: the service's page, with its feature count and features, from the registry the runs applied.
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(style|script)[^>]*>.*?</\1>", "", page_dom,
                                                    flags=re.S)).split())
    wanted = service_features(service)
    assert f"Feature Service: {service}" in text
    assert f"This table contains {len(wanted)} rows" in text, text[:1500]
    assert wanted[0].name in text
    assert page.stat().st_size > 5 * blank_shot.stat().st_size
