"""Files replaced whole or not at all: each is written to a copy beside it, then renamed over it, so a reader
never meets half a file and a killed writer leaves the old file. The copy's name says which process made
it, so a copy a killed writer left behind can be told from one still being written (abandoned_copies).
DuckDB's COPY does the same for the files dbt writes (`use_tmp_file`), with a name of its own."""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

# A hidden name that ends in neither .parquet nor a text suffix, so no glob of a zone's files picks it up:
# .<file>.<where>.<pid>.<thread>.tmp, `where` naming the processes its pid is one of (see here).
_COPY = re.compile(r"\.(?P<file>.+)\.(?P<where>[0-9a-f-]+)\.(?P<pid>\d+)\.\d+\.tmp")
DUCKDB_COPY_PREFIX = "tmp_"  # DuckDB's COPY writes tmp_<file> beside <file>, then renames it
# A copy made by another host or container, whose processes this one cannot see, is abandoned once it has
# not changed for this long: no writer pauses a day between two writes to one file.
FOREIGN_COPY_IDLE_S = 86_400


@contextlib.contextmanager
def replacing(path: Path, *, private: bool = False, durable: bool = False) -> Iterator[Path]:
    """A path to write `path`'s new content to; it replaces `path` when the block ends, and is removed if
    the block fails. `private`: the copy is readable by its owner only before anything is written to it.
    `durable`: the content and the rename are on disk when the block ends (a power cut, not only a kill).
    A copy of `path` a killed writer left is removed first: it holds what `path` held, where no reader or
    erasure looks."""
    for stale in _abandoned_among(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"), of=path.name):
        stale.unlink(missing_ok=True)
    copy = copy_path(path)
    try:
        if private:
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a copy of the same name already there keeps its mode otherwise
            os.close(fd)
        yield copy
        if durable:
            sync(copy)
        os.replace(copy, path)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    if durable:
        sync(path.parent)


def copy_path(path: Path, where: str | None = None, pid: int | None = None,
              thread: int | None = None) -> Path:
    """The copy of `path` this thread writes (or that `thread` of process `pid` on `where` writes)."""
    where, pid, thread = where or here(), pid or os.getpid(), thread or threading.get_ident()
    return path.with_name(f".{path.name}.{where}.{pid}.{thread}.tmp")


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
    hold what their file held, where readers, and erasures, do not look. A copy whose writer may still
    run is not abandoned."""
    return _abandoned_among(sorted(folder.rglob(".*.tmp")))


def duckdb_copies(folders: Iterable[Path]) -> list[Path]:
    """The Parquet files DuckDB's COPY was writing under `folders` and has not renamed yet: in flight, or
    left by a kill (only the caller knows which)."""
    return [path for folder in folders for path in sorted(folder.rglob(f"{DUCKDB_COPY_PREFIX}*.parquet"))]


def _abandoned_among(paths: Iterable[Path], of: str | None = None) -> list[Path]:
    """The copies among `paths` (of the file named `of`, if given) whose writer is gone."""
    return [path for path in paths
            if (named := _COPY.fullmatch(path.name)) and of in (None, named["file"])
            and _abandoned(path, named["where"], int(named["pid"]))]


def _abandoned(copy: Path, where: str, pid: int) -> bool:
    try:
        changed = copy.stat().st_mtime
    except FileNotFoundError:  # renamed or removed meanwhile: its writer was alive
        return False
    if where != here():
        return time.time() - changed > FOREIGN_COPY_IDLE_S
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    return started > changed + 1  # the pid was taken again, by a process started after the copy was written


@functools.cache
def here() -> str:
    """What this process's pid is relative to: this boot's pid namespace on Linux (a container has its
    own), else this host."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:16]
    return f"{boot[:8]}-{namespace}"


def sync(path: Path) -> None:
    """Flush `path` to disk: a file's content, or a folder's entries (a rename in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
