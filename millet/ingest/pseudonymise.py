"""Raw identifiers never leave ingestion: the account id becomes a keyed hash, the rest is dropped."""

from __future__ import annotations

import hashlib
import hmac


def user_key(account_id: str, secret: bytes) -> str:
    """HMAC-SHA256 keyed by the settings' secret: stable per person, useless without the key."""
    return hmac.new(secret, account_id.encode(), hashlib.sha256).hexdigest()[:32]
