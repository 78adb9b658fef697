"""The dashboard's login password: ``[api] password_hash`` made and checked with scrypt
(hashlib, stdlib), in a self-describing format ``scrypt$N$r$p$salt$hash`` (base64)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

# N=2^15, r=8: 32 MiB and about 50-100 ms per check here; OWASP's scrypt floor is N=2^17 with
# r=8 at 128 MiB, which we leave to people who pass their own parameters (the format keeps
# them, so old hashes stay valid when the default changes)
DEFAULT_N = 1 << 15
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# a hash from the config may not ask for more than this (memory = 128 * r * N bytes)
MAX_MEMORY = 256 << 20
PREFIX = "scrypt"
FORMAT = "scrypt$N$r$p$salt$hash"


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed ``[api] password_hash``.

    :ivar text: the hash as written in the config (repr hides it)
    """

    n: int
    r: int
    p: int
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    text: str = field(repr=False)

    def verify(self, password: str) -> bool:
        """Whether *password* is the one hashed (constant-time compare; blocks for the
        scrypt work, so call it off the event loop)."""
        candidate = _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(candidate, self.digest)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=size, maxmem=MAX_MEMORY + (1 << 20)
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(
    password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """*password* hashed with a fresh random salt, as ``scrypt$N$r$p$salt$hash``.

    :raises ValueError: for an empty password
    """
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return f"{PREFIX}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def parse_hash(text: str) -> PasswordHash:
    """The hash *text* checked and parsed.

    :raises ValueError: naming what is wrong (never quoting the value)
    """
    parts = text.strip().split("$")
    if len(parts) != 6 or parts[0] != PREFIX:
        raise ValueError(f"is not a hash made by `sluiceway hash-password` (expected {FORMAT})")
    try:
        n, r, p = (int(part) for part in parts[1:4])
    except ValueError:
        raise ValueError(f"N, r and p must be whole numbers ({FORMAT})") from None
    if n < 2 or n & (n - 1):
        raise ValueError(f"N must be a power of 2 above 1, not {n}")
    if not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError(f"r must be 1-64 and p 1-16, not r={r}, p={p}")
    if 128 * r * n > MAX_MEMORY:
        raise ValueError(f"N={n} with r={r} needs more than {MAX_MEMORY >> 20} MiB per login")
    try:
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except (binascii.Error, ValueError):
        raise ValueError("the salt and the hash must be base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("the salt (8+ bytes) or the hash (16+ bytes) is too short")
    return PasswordHash(n, r, p, salt, digest, text.strip())
