"""Engine API keys: `ot-` followed by 43 url-safe random characters; stored as SHA-256.

A fast hash is right here: the keys carry 256 bits of randomness, so there is nothing to brute-force,
and the hot path hashes every request's key.
"""

import hashlib
import secrets

KEY_PREFIX = "ot-"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()
