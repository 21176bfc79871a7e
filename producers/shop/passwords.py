"""The demo users' passwords: salted PBKDF2-SHA256 hashes, checked in constant time."""
from __future__ import annotations

import hashlib
import hmac
import os


def hash_password(password: str, *, iterations: int = 20_000) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<digest>``, with a new random salt each time."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """True when `password` is the one `stored` was made from; False for any malformed hash."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(candidate.hex(), digest)
