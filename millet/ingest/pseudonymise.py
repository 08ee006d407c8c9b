"""Raw identifiers never leave ingestion: the account id becomes a keyed hash, the rest is dropped.

`user_key` = HMAC-SHA256(secret, account id), hex, first 32 characters: stable per person, useless
without the key. It is computed inside DuckDB (RFC 2104 built from its sha256) so that millions of
rows never pass through Python; the key travels as query parameters, never in SQL text or logs.
"""

from __future__ import annotations

import hashlib

_BLOCK = 64  # SHA-256's block size in bytes


def user_key_sql(column: str) -> str:
    """SQL for the user_key of VARCHAR `column`; run it with `hmac_parameters(secret)`."""
    return f"left(sha256($hmac_outer || unhex(sha256($hmac_inner || encode({column})))), 32)"


def hmac_parameters(secret: bytes) -> dict[str, bytes]:
    key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    key = key.ljust(_BLOCK, b"\0")
    return {"hmac_inner": bytes(b ^ 0x36 for b in key), "hmac_outer": bytes(b ^ 0x5C for b in key)}


def user_keys(accounts: list[str], secret: bytes) -> list[str]:
    """The user_key of each account id, by the same SQL as ingestion (one definition of the hash)."""
    import duckdb

    with duckdb.connect() as con:
        rows = con.execute(f"select {user_key_sql('a')} from unnest($accounts) with ordinality as t(a, i) "
                           "order by i", {"accounts": accounts, **hmac_parameters(secret)}).fetchall()
    return [key for (key,) in rows]
