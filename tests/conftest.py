"""Session-wide settings. Airflow reads its configuration when first imported and Feast's repo
modules are imported once per process, so the whole test session shares one data root."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="millet-tests-"))
atexit.register(shutil.rmtree, _SESSION_ROOT, ignore_errors=True)  # each process's own, when it ends
os.environ.update(
    {
        "MILLET_DATA_ROOT": str(_SESSION_ROOT / "data"),
        "MILLET_SECRETS_DIR": str(_SESSION_ROOT / "secrets"),
        "MILLET_PSEUDONYM_KEY": "test-only-pseudonym-key",
        "MILLET_TASK_RETRIES": "0",
        "MILLET_ONLINE_STORE": "sqlite",
        # `millet serve` without tokens, on loopback; tests/e2e/test_serving_auth.py turns OIDC on.
        "MILLET_SERVE_AUTH": "none",
        # The session's worlds share this data root with days months apart: a night of one would delete
        # another's landing drops as expired (tests/unit/test_retention.py tests the retention itself).
        "MILLET_LANDING_RETENTION_DAYS": "0",
        "MILLET_QUARANTINE_RETENTION_DAYS": "0",
    }
)

TEST_KEY = os.environ["MILLET_PSEUDONYM_KEY"].encode()

from tests.receivers import mailbox, webhook  # noqa: E402, F401 (real alert receivers, as fixtures)

# The test files that take longest (in the last clean-clone run on two cores: rolling state and the
# backfills ~7 min each, credit risk ~5, feature values ~4, ...), started first so that the two workers finish
# together; xdist's own order is by number of tests, which started the longest last (pyproject's addopts
# turn it off with --no-loadscope-reorder).
LONGEST_FIRST = ("test_rolling_state", "test_backfill", "test_credit_risk", "test_feature_values",
                 "test_nightly", "test_serving", "test_erasure", "test_long_history", "test_run",
                 "test_history")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each file's order kept
