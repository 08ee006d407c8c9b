"""A scanner for raw identifiers, independent of Millet's code: every account id, device id and phone
number the simulator put in the landing zone, looked for in every file of every other zone (decoded:
Parquet's columns, DuckDB's tables, gzip'd text; everything else as its bytes) and in Redis."""

from __future__ import annotations

import json
import re
import zlib
from collections import defaultdict
from pathlib import Path

RAW_FIELDS = ("account_id", "device_id", "phone")
# In a line cut short, what is left of a field still names a person.
_FIELD_IN_TEXT = re.compile(rb'"(account_id|device_id|phone)"\s*:\s*"([^"]+)"')
# Anything that looks like one: an account id (A and digits), a device id (digits), a phone (+ digits).
_CANDIDATE = re.compile(rb"[A+]?[0-9]{6,}")


def emitted_identifiers(landing_dir: Path) -> set[str]:
    """Every raw identifier value in every line of every landing file, parseable or not."""
    found: set[str] = set()
    for path in landing_dir.rglob("*.jsonl.gz"):
        text = _gunzip(path.read_bytes())
        found.update(value.decode() for _, value in _FIELD_IN_TEXT.findall(text))
    return {value for value in found if len(value) >= 6}


def _texts(path: Path):
    """The decoded content of `path`, as (where, byte string) pairs to search: `where` is the DuckDB table
    a text came from, else ""."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        yield "", " ".join(table.column_names).encode()
        for column in table.columns:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or \
                    pa.types.is_binary(column.type) or pa.types.is_dictionary(column.type):
                yield "", "\n".join(str(v) for v in column.to_pylist() if v is not None).encode()
    elif path.suffix == ".duckdb":
        import duckdb

        with duckdb.connect(str(path), read_only=True) as con:
            for schema, table, column in con.sql(
                    "select table_schema, table_name, column_name from information_schema.columns "
                    "where data_type in ('VARCHAR', 'BLOB')").fetchall():
                rows = con.sql(f'select "{column}"::varchar from "{schema}"."{table}"').fetchall()
                yield f":{table}", "\n".join(str(v) for (v,) in rows if v is not None).encode()
    elif path.suffix == ".gz":
        yield "", _gunzip(path.read_bytes())
        yield "", path.read_bytes()
    else:
        yield "", path.read_bytes()


def _gunzip(data: bytes) -> bytes:
    """As much of a gzip stream as can be read: a drop cut short on purpose still names people."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    except zlib.error:
        return b""


def found_in(data: bytes, identifiers: set[str]) -> set[str]:
    hits = set()
    for match in _CANDIDATE.findall(data):
        text = match.decode()
        hits.update(t for t in (text, text[1:]) if t in identifiers)
    return hits


def scan_files(root: Path, identifiers: set[str], skip: tuple[str, ...]) -> dict[str, set[str]]:
    """file (relative to `root`) → the identifiers found in it; the top-level folders in `skip` unread."""
    return _scan(root, skip, lambda data: found_in(data, identifiers))


def scan_for(root: Path, needles: set[str], skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """file (and DuckDB table: "file:table") → which of `needles` (say, user_keys) it holds anywhere."""
    encoded = {n: n.encode() for n in needles}
    return _scan(root, skip, lambda data: {n for n, e in encoded.items() if e in data})


def _scan(root: Path, skip: tuple[str, ...], find) -> dict[str, set[str]]:
    leaks: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or relative.parts[0] in skip or path.suffix == ".tmp":
            continue
        for where, data in _texts(path):
            if hits := find(data):
                leaks[f"{relative}{where}"] |= hits
    return dict(leaks)


def scan_redis(client, pattern: str, identifiers: set[str]) -> dict[str, set[str]]:
    leaks: dict[str, set[str]] = defaultdict(set)
    for key in client.scan_iter(match=pattern, count=1000):
        values = client.hgetall(key) if client.type(key) == b"hash" else {b"": client.dump(key) or b""}
        for data in (key, *values.keys(), *values.values()):
            if hits := found_in(data, identifiers):
                leaks[key.decode(errors="replace")] |= hits
    return dict(leaks)


def summary(leaks: dict[str, set[str]]) -> str:
    return json.dumps({where: sorted(hits)[:3] for where, hits in list(leaks.items())[:20]}, indent=1)
