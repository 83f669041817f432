"""HMAC-SHA256 signatures for webhooks the gateway sends and receives.

Header format (``X-FlowBiz-Signature``)::

    t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

``v1`` is ``hex(HMAC_SHA256(secret, f"{t}.{raw_body}"))``. During a secret rotation the
sender signs with both secrets and sends two ``v1`` entries; a receiver accepts any entry
that matches any of its secrets. The timestamp bounds replays to ``tolerance`` seconds.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence

from gateway.errors import VerificationError

__all__ = ["SIGNATURE_HEADER", "sign", "verify"]

SIGNATURE_HEADER = "X-FlowBiz-Signature"


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    # hmac.digest is the one-shot C path: the same MAC as hmac.new(...).hexdigest() without
    # building an HMAC object, which matters when every inbound request is verified.
    return hmac.digest(secret.encode(), b"%d.%b" % (timestamp, body), "sha256").hex()


def sign(secrets: Sequence[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The header value for ``body``, signed with every secret given (newest first)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={ts}", *(f"v1={_digest(s, ts, body)}" for s in secrets)])


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> int:
    """Check ``header`` against ``body``; return its timestamp or raise VerificationError."""
    if not header:
        raise VerificationError("missing signature header", reason="missing_signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise VerificationError("malformed signature header", reason="malformed_signature")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise VerificationError("signature timestamp outside the window", reason="stale_signature")
    for secret in secrets:
        expected = _digest(secret, timestamp, body)
        # compare against every candidate so timing does not reveal which one matched
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return timestamp
    raise VerificationError("signature does not match", reason="bad_signature")
