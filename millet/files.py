"""Files replaced whole or not at all: each is written to a copy beside it, then renamed over it, so a reader
never meets half a file and a killed writer leaves the old file. The copy's name says which process made
it, so a copy a killed writer left behind can be told from one still being written (abandoned_copies)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

# A hidden name that ends in neither .parquet nor a text suffix: no glob of a zone's files picks it up.
_COPY = re.compile(r"\..+\.(?P<pid>\d+)\.\d+\.tmp")


@contextlib.contextmanager
def replacing(path: Path, *, private: bool = False, durable: bool = False) -> Iterator[Path]:
    """A path to write `path`'s new content to; it replaces `path` when the block ends, and is removed if
    the block fails. `private`: the copy is made readable by its owner only before anything is written to
    it. `durable`: the content is on disk before the rename (survives a power cut, not only a kill)."""
    copy = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if private:
            os.close(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        yield copy
        if durable:
            sync(copy)
        os.replace(copy, path)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, *, durable: bool = False) -> None:
    """Replace `path` whole with `text`."""
    with replacing(path, durable=durable) as copy:
        copy.write_text(text)


def write_bytes(path: Path, data: bytes, *, private: bool = False, durable: bool = False) -> None:
    """Replace `path` whole with `data` (see `replacing` for `private` and `durable`)."""
    with replacing(path, private=private, durable=durable) as copy:
        copy.write_bytes(data)


def abandoned_copies(folder: Path) -> list[Path]:
    """The copies under `folder` whose writer is gone (killed before it could rename or remove them): they
    hold what their file held, where readers, and erasures, do not look. A copy whose writer still runs on
    this host is not abandoned."""
    found = []
    for path in sorted(folder.rglob(".*.tmp")):
        named = _COPY.fullmatch(path.name)
        if named and not _running(int(named["pid"])):
            found.append(path)
    return found


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sync(path: Path) -> None:
    """Flush `path` to disk: a file's content, or a folder's entries (a rename in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
