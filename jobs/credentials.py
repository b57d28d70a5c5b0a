"""What an owner's machine shows the observatory: the header its jobs carry the machine's credential in, and the
fingerprint by which it recognises the pool's Ray token (so that a rotated token is noticed without being sent)."""

from __future__ import annotations

import hashlib

MACHINE_HEADER = "X-Machine-Token"


def pool_token_id(ray_token: str) -> str:
    """A short fingerprint of the pool's Ray token (a sha256 prefix: it tells nothing of the token itself)."""
    return hashlib.sha256(ray_token.encode()).hexdigest()[:16]
