"""Pseudonymous keys: real customer and driver ids become keyed hashes at the door, with a secret salt.

The salt comes from ``SERVICETIME_KEY_SALT`` (or a file named by ``SERVICETIME_KEY_SALT_FILE``, which is how a
Kubernetes Secret mounted as a volume arrives), never from the config or the seed: whoever holds the keys and
the seed must not be able to recompute a customer's key from their id. The simulator keeps its own seeded salt,
for reproducible data; it never sees a real id. Rotating the salt makes every customer new (validation flags
that as a collapsed known-customer share), so the bootstrap generates it once and keeps it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

SALT_ENV = "SERVICETIME_KEY_SALT"
SALT_FILE_ENV = "SERVICETIME_KEY_SALT_FILE"
MIN_SALT_BYTES = 16  # shorter salts can be brute-forced over a customer-id space
KEY_CHARS = 16  # the same width as the simulator's keys, so both look alike downstream


class SaltError(ValueError):
    """No usable salt where raw ids must be hashed."""


def key_salt(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The secret salt, or ``None`` when none is configured; ``SaltError`` for one too short or unreadable."""
    env = os.environ if environ is None else environ
    value, source = env.get(SALT_ENV), SALT_ENV
    if not value and env.get(SALT_FILE_ENV):
        source = env[SALT_FILE_ENV]
        try:
            value = Path(source).read_text().strip()
        except OSError as exc:
            raise SaltError(f"cannot read the key salt from {source} ({SALT_FILE_ENV}): {exc.strerror}") from None
    if not value:
        return None
    salt = value.encode()
    if len(salt) < MIN_SALT_BYTES:
        raise SaltError(f"the key salt from {source} has {len(salt)} bytes; use at least {MIN_SALT_BYTES} "
                        "(e.g. `openssl rand -hex 16`)")
    return salt


def require_salt(environ: Mapping[str, str] | None = None, why: str = "raw ids") -> bytes:
    salt = key_salt(environ)
    if salt is None:
        raise SaltError(f"{why}: set {SALT_ENV} (or {SALT_FILE_ENV}) to the secret salt to hash them "
                        "(on the cluster it comes from the servicetime-key-salt Secret)")
    return salt


def pseudonymise(ids: Iterable[object], salt: bytes) -> list[str]:
    """HMAC-SHA256 of each id under the salt, as hex keys; ``None``/NaN stay missing."""
    out = []
    for raw in ids:
        if raw is None or raw != raw:  # NaN is not equal to itself
            out.append(None)
            continue
        out.append(hmac.new(salt, str(raw).encode(), hashlib.sha256).hexdigest()[:KEY_CHARS])
    return out
