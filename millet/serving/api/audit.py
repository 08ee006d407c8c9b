"""The feature server's audit log: one JSON line per request that asked for features or a decision.

Who asked (the token's user, or why there was none), what (a feature service, feature views, a decision),
how many entity keys, the answer's status and when; never a key or a feature value. Lines are appended
with O_APPEND in one write each, so several server processes can share the file.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path


class AuditLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, *, who: str, roles: list[str], action: str, target: str | None, keys: int | None,
               status: int) -> None:
        entry = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "who": who, "roles": roles,
                 "action": action, "target": target, "keys": keys, "status": status}
        os.write(self._fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)
