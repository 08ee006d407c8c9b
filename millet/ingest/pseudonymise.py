"""Raw identifiers never leave ingestion: the account id becomes a keyed hash, the rest is dropped.

`user_key` = HMAC-SHA256(key, account id), hex, first 32 characters: stable per person, useless without
the key. A key rotation adds a link to the chain rather than replacing the key: with keys k1 … kn (oldest
first), user_key = HMAC(kn, … HMAC(k2, HMAC(k1, account id))), so what is already stored is re-keyed from
its user_keys alone (`millet rotate-key`, millet/privacy/rotation.py), with no raw id kept anywhere.
It is computed inside DuckDB (RFC 2104 built from its sha256) so that millions of rows never pass through
Python; the keys travel as query parameters, never in SQL text or logs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_BLOCK = 64  # SHA-256's block size in bytes


class KeyChain:
    """The pseudonymisation keys, oldest first, and the one definition of the hash built from them."""

    def __init__(self, keys: Sequence[bytes]):
        if not keys or not all(keys):
            raise ValueError("a pseudonymisation key chain needs at least one non-empty key")
        self.keys = tuple(keys)

    def sql(self, column: str) -> str:
        """SQL for the user_key of VARCHAR `column`; run it with `parameters()`."""
        expr = column
        for link in range(len(self.keys)):
            inner = f"unhex(sha256($hmac_inner_{link} || encode({expr})))"
            expr = f"left(sha256($hmac_outer_{link} || {inner}), 32)"
        return expr

    def parameters(self) -> dict[str, bytes]:
        params = {}
        for link, key in enumerate(self.keys):
            padded = (hashlib.sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
            params[f"hmac_inner_{link}"] = bytes(b ^ 0x36 for b in padded)
            params[f"hmac_outer_{link}"] = bytes(b ^ 0x5C for b in padded)
        return params

    def user_keys(self, values: list[str]) -> list[str]:
        """The chain's hash of each value (an account id; a user_key for a one-key link), by the SQL above."""
        import duckdb

        from millet.settings import declared_duckdb_config

        with duckdb.connect(config=declared_duckdb_config()) as con:
            rows = con.execute(f"select {self.sql('a')} from unnest($values) with ordinality as t(a, i) "
                               "order by i", {"values": values, **self.parameters()}).fetchall()
        return [key for (key,) in rows]

    @property
    def newest(self) -> bytes:
        return self.keys[-1]

