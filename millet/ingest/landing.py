"""Read a landing drop file into an Arrow table of lines, without making a Python string per line.

A file that cannot be split into lines (not gzip or cut short, empty) raises UnreadableFile: it is
quarantined as a file with that reason, and the day's other files still load. A line that is not
UTF-8 is only marked (`bad_encoding`): validation quarantines that line alone.
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
     ("line", pa.large_string()), ("bad_encoding", pa.bool_())]
)


class UnreadableFile(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def drop_files(landing_dir: Path, channel: str, day: str) -> list[Path]:
    return sorted((landing_dir / channel / f"dt={day}").glob("*.jsonl.gz"))


def read_lines(path: Path) -> pa.Table:
    """The file's non-empty lines (each with its newline), their 1-based line numbers in the file, and
    whether each was not UTF-8. Such a line is kept as a string with each invalid byte sequence replaced
    by U+FFFD (Python's errors="replace"), so that quarantine can store and show it."""
    lines, bad_encoding = _utf8_lines(_decompress(path))
    table = lines_table(path.name, lines, bad_encoding)
    # A blank line (whitespace only, CRLF's included) is no record; every other line is one, loaded or
    # quarantined, never dropped.
    blank = pc.utf8_is_space(lines)
    return table.filter(pc.invert(blank)) if pc.any(blank).as_py() else table


def lines_table(
    source_file: str, lines: pa.LargeStringArray, bad_encoding: pa.BooleanArray | None = None
) -> pa.Table:
    """`lines` numbered from 1 as a LINES_SCHEMA table; `bad_encoding` None: every line was UTF-8."""
    n = len(lines)
    source = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([source_file]))
    if bad_encoding is None:
        bad_encoding = pa.array(np.zeros(n, bool))
    return pa.table([source, np.arange(1, n + 1, dtype=np.int64), lines, bad_encoding], schema=LINES_SCHEMA)


def _decompress(path: Path) -> bytes:
    try:
        text = gzip.decompress(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error):
        raise UnreadableFile("truncated_or_corrupt_gzip") from None
    if not text.strip():
        raise UnreadableFile("empty_file")
    return text


def _utf8_lines(text: bytes) -> tuple[pa.LargeStringArray, pa.BooleanArray | None]:
    """The lines, and which of them were not UTF-8 (None when all were: then it costs one check)."""
    lines = _split_lines(text)
    try:
        lines.validate(full=True)  # checks UTF-8 of the whole buffer at once
        return lines, None
    except pa.ArrowInvalid:
        pass
    # Rare: repair the whole buffer in one call, then the lines that changed are those that were not
    # UTF-8 (valid bytes decode to themselves, and a newline is never part of an invalid sequence, so
    # the repaired buffer has the same lines). Vectorised even when every line is bad.
    repaired = _split_lines(text.decode("utf-8", errors="replace").encode())
    changed = pc.not_equal(lines.view(pa.large_binary()), repaired.view(pa.large_binary()))
    return repaired, changed


def _split_lines(text: bytes) -> pa.LargeStringArray:
    """One string per line, viewing `text` in place (each keeps its newline: JSON ignores it).

    Not checked for UTF-8 here: the caller does."""
    # bytes.split then len() is several times faster here than a numpy scan for newlines.
    lengths = np.fromiter(map(len, text.split(b"\n")), np.int64)
    lengths[:-1] += 1  # each line but the last ends in its newline
    if lengths[-1] == 0:  # the file ended in a newline: no line after it
        lengths = lengths[:-1]
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(text))
