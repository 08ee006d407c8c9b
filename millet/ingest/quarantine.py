"""Quarantine without raw identifiers: what a refused line said, minus who it was about.

One rule per contract field, taken from its role:
- the account id becomes the line's `user_key` (the same keyed hash as bronze's), so an on-call
  engineer can follow a person across zones and an erasure finds their quarantined lines;
- every other identifier (device id, phone number) is masked to its shape: each digit becomes 9 and each
  letter x, so "does not match [0-9]{14,16}" can still be seen, and the value cannot;
- a line that is not a JSON object has no fields to mask. It is sealed (AES-SIV, a key derived from the
  pseudonymisation key) and shown as NULL; `unseal` opens it for whoever holds the key. A whole file that
  could not be read is sealed the same way. Sealing is deterministic, so a re-run writes identical bytes.
The `detail` of a refusal names an identifier field, never its value (millet/ingest/validate.py).
Quarantine is deleted after `MILLET_QUARANTINE_RETENTION_DAYS` (millet/ingest/retention.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from pathlib import Path

import pyarrow as pa

from millet.contracts.base import Contract
from millet.files import write_bytes
from millet.ingest.pseudonymise import KeyChain
from millet.sqltext import ident, literal

SCHEMA = pa.schema(
    [("source_file", pa.string()), ("line_no", pa.int64()), ("reason", pa.string()),
     ("detail", pa.string()), ("masked_line", pa.string()), ("sealed_line", pa.binary())]
)
SEALED_SUFFIX = ".sealed"
# A masked line's user_key, in three groups (before, the key, after): for erasure and key rotation.
MASKED_USER_KEY = re.compile(r'("user_key"\s*:\s*")([0-9a-f]{32})(")')
RAW_ACCOUNT_ID = re.compile(r'"account_id"\s*:\s*"([^"]+)"')  # in a sealed (original) line or file
_GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_CHUNK = 64 * 1024  # compressed bytes per piece (a damaged one is retried byte by byte)
_SEAL_KEY_CONTEXT = b"millet quarantine seal v1"


def mask_sql(value: str) -> str:
    """SQL: the shape of VARCHAR `value`, each digit 9 and each letter x (lengths and punctuation kept)."""
    return f"regexp_replace(regexp_replace({value}, '[0-9]', '9', 'g'), '[A-Za-z]', 'x', 'g')"


def masked_line_sql(contract: Contract, line: str, chain: KeyChain) -> str:
    """SQL: VARCHAR `line` (a refused line) with each identifier field replaced by its rule, or NULL when
    the line is not a JSON object. Needs `chain.parameters()`."""
    patch = []
    for name in contract.raw_identifiers:
        value = f"({line} ->> {literal('$.' + ident(name))})"
        if name == contract.account:
            patch += [literal(name), "null", literal("user_key"), chain.sql(value)]
        else:
            patch += [literal(name), mask_sql(value)]
    # CASE, not AND: DuckDB evaluates both sides of AND, and json_type raises on broken JSON. A key the
    # line lacks gets a NULL patch, which leaves it absent.
    return (f"case when json_valid({line}) then case when json_type({line}) = 'OBJECT' then "
            f"json_merge_patch({line}, json_object({', '.join(patch)})) end end")


class Sealer:
    """Deterministic authenticated encryption of what cannot be masked, bound to where it came from."""

    def __init__(self, secret: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESSIV

        # AES-SIV takes a 512-bit key: two HMAC-SHA256 blocks of the secret, apart from its HMAC use.
        key = b"".join(hmac.new(secret, _SEAL_KEY_CONTEXT + bytes([i]), hashlib.sha256).digest()
                       for i in (1, 2))
        self._aead = AESSIV(key)

    def seal(self, data: bytes, *where: str) -> bytes:
        return self._aead.encrypt(data, [w.encode() for w in where])

    def unseal(self, sealed: bytes, *where: str) -> bytes:
        """The original bytes; raises cryptography's InvalidTag for another key or another place."""
        return self._aead.decrypt(sealed, [w.encode() for w in where])


def line_place(channel: str, day: str, source_file: str, line_no: int) -> tuple[str, ...]:
    """What a sealed line is bound to: moving it elsewhere makes it fail to open."""
    return (channel, day, source_file, str(line_no))


def seal_batch(batch: pa.RecordBatch, sealer: Sealer, channel: str, day: str) -> pa.RecordBatch:
    """`batch` (SCHEMA's columns, `sealed_line` still the plain line) with those lines sealed."""
    plain = batch.column("sealed_line")
    if plain.null_count == len(plain):
        return batch.cast(SCHEMA)
    sealed = [None if text is None else sealer.seal(text.encode(), *line_place(channel, day, file, number))
              for text, file, number in zip(plain.to_pylist(), batch.column("source_file").to_pylist(),
                                            batch.column("line_no").to_pylist(), strict=True)]
    columns = [pa.array(sealed, pa.binary()) if name == "sealed_line" else batch.column(name)
               for name in batch.schema.names]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def quarantine_file(path: Path, folder: Path, sealer: Sealer, channel: str, day: str) -> Path:
    """An unreadable landing file, sealed whole into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (path.name + SEALED_SUFFIX)
    write_bytes(target, sealer.seal(path.read_bytes(), channel, day, path.name))
    return target


def unseal_file(sealed: Path, sealer: Sealer, channel: str, day: str) -> bytes:
    return sealer.unseal(sealed.read_bytes(), channel, day, sealed.name.removesuffix(SEALED_SUFFIX))


def unsealed_lines(table: pa.Table, sealer: Sealer, channel: str, day: str) -> list[str | None]:
    """Each row's original line where it was sealed (None where it was masked instead)."""
    return [None if blob is None else sealer.unseal(blob, *line_place(channel, day, f, n)).decode()
            for blob, f, n in zip(table.column("sealed_line").to_pylist(),
                                  table.column("source_file").to_pylist(),
                                  table.column("line_no").to_pylist(), strict=True)]



def naming(keys: set[str], chain: KeyChain, masked: list[str | None], lines: list[str | None]) -> list[bool]:
    """Which refused lines name one of `keys` (user_keys): a masked line by its user_key, an original
    (sealed) line by the account ids in it. What erasure removes, and what ingestion does not keep."""
    if not keys:
        return [False] * len(lines)
    raw = [RAW_ACCOUNT_ID.findall(line) if line is not None else [] for line in lines]
    accounts = sorted({account for found in raw for account in found})
    erased = {a for a, key in zip(accounts, chain.user_keys(accounts) if accounts else [], strict=True)
              if key in keys}
    return [(m is not None and any(match[2] in keys for match in MASKED_USER_KEY.finditer(m)))
            or any(account in erased for account in found) for m, found in zip(masked, raw, strict=True)]


def readable_text(data: bytes) -> str:
    """What a person can read in an unreadable landing file: a gzip stream inflated as far as it goes (a
    truncated or damaged one up to the damage, every member of a multi-member one), else the bytes as text.
    Searched as stored, compressed lines never show their account ids."""
    if data[:2] != _GZIP_MAGIC:
        return data.decode("utf-8", errors="replace")
    text = []
    while data[:2] == _GZIP_MAGIC:
        inflate, rest = zlib.decompressobj(16 + zlib.MAX_WBITS), b""
        for at in range(0, len(data), _INFLATE_CHUNK):
            piece, before = data[at:at + _INFLATE_CHUNK], inflate.copy()
            try:
                text.append(inflate.decompress(piece))
            except zlib.error:  # damage (or a bad checksum): what this piece held before it, byte by byte
                text.extend(_inflated_until_damage(before, piece))
                return b"".join(text).decode("utf-8", errors="replace")
            if inflate.eof:  # the member ended: the next may follow
                rest = inflate.unused_data + data[at + _INFLATE_CHUNK:]
                break
        data = rest
    return b"".join(text).decode("utf-8", errors="replace")


def _inflated_until_damage(inflate, piece: bytes) -> list[bytes]:
    out = []
    for i in range(len(piece)):
        try:
            out.append(inflate.decompress(piece[i:i + 1]))
        except zlib.error:
            break
    return out
