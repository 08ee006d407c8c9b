"""Advisory locks between Millet's processes: a lock file held with flock, let go when it is closed."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


def try_lock(path: Path) -> IO | None:
    """The lock file at `path`, open and held, if no one else holds it (closing it lets go); else None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock
