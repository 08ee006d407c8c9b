"""Session-wide settings. Airflow reads its configuration when first imported and Feast's repo
modules are imported once per process, so the whole test session shares one data root."""

import os
import tempfile
from pathlib import Path

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="millet-tests-"))
os.environ.update(
    {
        "MILLET_DATA_ROOT": str(_SESSION_ROOT / "data"),
        "MILLET_SECRETS_DIR": str(_SESSION_ROOT / "secrets"),
        "MILLET_PSEUDONYM_KEY": "test-only-pseudonym-key",
        "MILLET_TASK_RETRIES": "0",
        "MILLET_ONLINE_STORE": "sqlite",
    }
)

TEST_KEY = os.environ["MILLET_PSEUDONYM_KEY"].encode()

from tests.receivers import mailbox, webhook  # noqa: E402, F401 (real alert receivers, as fixtures)
