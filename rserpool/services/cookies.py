"""Cookie helpers for the demo services: optional integrity protection.

The PU stores a cookie without looking inside and hands it to whichever PE it
fails over to (digest 6.16), so a PE must not trust it blindly: with a shared
``secret`` (the same on every PE of the pool) :func:`seal` appends ``" "`` and
the hex HMAC-SHA256 of the state, and :func:`unseal` returns the state only
when the tag is right.  Without a secret the cookie is the state itself.

>>> unseal(b"k", seal(b"k", b"echo 1 3 12"))
b'echo 1 3 12'
>>> unseal(b"k", seal(b"other", b"echo 1 3 12")) is None
True
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["seal", "unseal"]

_TAG_HEX = 64


def seal(secret: bytes | None, state: bytes) -> bytes:
    if not secret:
        return state
    tag = hmac.new(secret, state, hashlib.sha256).hexdigest().encode()
    return state + b" " + tag


def unseal(secret: bytes | None, cookie: bytes) -> bytes | None:
    """The state inside ``cookie``, or None if its tag is wrong."""
    if not secret:
        return cookie
    state, sep, tag = cookie.rpartition(b" ")
    if not sep or len(tag) != _TAG_HEX:
        return None
    want = hmac.new(secret, state, hashlib.sha256).hexdigest().encode()
    return state if hmac.compare_digest(want, tag) else None
