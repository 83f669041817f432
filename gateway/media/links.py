"""Signed, expiring links to kept files: how LINE, Twilio and webhook agents fetch them.

A link is ``{public_base_url}/media/{blob}?exp={unix seconds}&sig={hex}``, the signature an
HMAC-SHA256 over ``"{blob}\\n{exp}"`` cut to 128 bits. Guarantees: a link verifies only for
its own blob and only until ``exp``; during a key rotation links signed with any configured
key verify, new links use the first; the comparison is constant-time. Without configured
keys one key is made at random and kept in the store (:meth:`Keyspace.media_link_key`) the
first time any process needs it, so every process signs alike.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote

from gateway.store import Keyspace, Store

__all__ = ["MediaLinks", "load_link_keys"]

_SIG_HEX = 32
_KEPT_KEY_TTL = 100 * 365 * 24 * 3600.0


class MediaLinks:
    def __init__(
        self, keys: Sequence[bytes], *, base_url: str | Callable[[], str], ttl_seconds: int
    ) -> None:
        if not keys:
            raise ValueError("signed links need at least one key")
        self._keys = tuple(keys)
        # A callable: the public URL may be known only once the listener is bound.
        self._base_url = base_url if callable(base_url) else (lambda: base_url)
        self.ttl_seconds = ttl_seconds

    def _sign(self, key: bytes, blob: str, expires: int) -> str:
        return hmac.digest(key, f"{blob}\n{expires}".encode(), "sha256").hex()[:_SIG_HEX]

    def url(self, blob: str, *, now: float | None = None) -> str:
        expires = int(time.time() if now is None else now) + self.ttl_seconds
        signature = self._sign(self._keys[0], blob, expires)
        base = self._base_url().rstrip("/")
        return f"{base}/media/{quote(blob, safe='')}?exp={expires}&sig={signature}"

    def verify(self, blob: str, expires: str, signature: str, *, now: float | None = None) -> bool:
        if not expires.isdigit() or len(expires) > 12 or len(signature) != _SIG_HEX:
            return False
        if int(expires) < (time.time() if now is None else now):
            return False
        return any(
            hmac.compare_digest(self._sign(key, blob, int(expires)), signature)
            for key in self._keys
        )


async def load_link_keys(
    configured: Sequence[str], store: Store, keyspace: Keyspace
) -> list[bytes]:
    """The configured keys, or the one kept in the store (made by the first process)."""
    if configured:
        return [key.encode() for key in configured]
    made = secrets.token_hex(32).encode()
    key = keyspace.media_link_key()
    await store.claim(key, ttl=_KEPT_KEY_TTL, holder=made)
    kept = await store.get_record(key)
    return [kept if kept else made]
