"""Read a landing drop file into an Arrow table of lines, without making a Python string per line.

A file that cannot be read as a whole (empty, truncated gzip, not UTF-8) raises UnreadableFile: it
is quarantined as a file with that reason, and the day's other files still load.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LINES_SCHEMA = pa.schema(
    [("source_file", pa.dictionary(pa.int32(), pa.string())), ("line_no", pa.int64()),
     ("line", pa.large_string())]
)


class UnreadableFile(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def drop_files(landing_dir: Path, channel: str, day: str) -> list[Path]:
    return sorted((landing_dir / channel / f"dt={day}").glob("*.jsonl.gz"))


def read_lines(path: Path) -> pa.Table:
    """The file's non-empty lines (each with its newline) and their 1-based line numbers in the file."""
    lines = _split_lines(_decompress(path))
    try:
        lines.validate(full=True)  # checks UTF-8
    except pa.ArrowInvalid:
        raise UnreadableFile("bad_encoding") from None
    numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    source = pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(lines), np.int32)), pa.array([path.name]))
    table = pa.table([source, numbers, lines], schema=LINES_SCHEMA)
    # A blank line (whitespace only, CRLF's included) is no record; every other line is one, loaded or
    # quarantined, never dropped.
    blank = pc.utf8_is_space(lines)
    return table.filter(pc.invert(blank)) if pc.any(blank).as_py() else table


def _decompress(path: Path) -> bytes:
    try:
        text = gzip.decompress(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error):
        raise UnreadableFile("truncated_or_corrupt_gzip") from None
    if not text.strip():
        raise UnreadableFile("empty_file")
    return text


def _split_lines(text: bytes) -> pa.LargeStringArray:
    """One string per line, viewing `text` in place (each keeps its newline: JSON ignores it)."""
    # bytes.split then len() is several times faster here than a numpy scan for newlines.
    lengths = np.fromiter(map(len, text.split(b"\n")), np.int64)
    lengths[:-1] += 1  # each line but the last ends in its newline
    if lengths[-1] == 0:  # the file ended in a newline: no line after it
        lengths = lengths[:-1]
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(text))
