"""HMAC-SHA256 signatures for requests and webhooks the gateway sends and receives.

Header (``X-FlowBiz-Signature``): a timestamp and one or more signatures, comma-separated::

    t=1700000000,v2=<hex>[,v2=<hex>][,v1=<hex>]

``v2`` (requests: the HTTP API channel both ways) signs the whole request::

    hex(HMAC_SHA256(secret, "v2\\n{t}\\n{METHOD}\\n{path}\\n{query}\\n" + raw_body))

``path`` and ``query`` are canonical (:func:`canonical_path`, :func:`canonical_query`): a
signature made for one method, path or query verifies for no other. ``v1`` signs the body
only (``hex(HMAC_SHA256(secret, f"{t}.{raw_body}"))``); it is what the agent webhooks and the
quota warnings carry, and what the HTTP channel accepts only behind its legacy switch.

During a secret rotation the sender signs with both secrets (one entry each); a receiver
accepts any entry that matches any of its secrets. The timestamp bounds replays to
``tolerance`` seconds either way; within that window the signed message's
:attr:`SignedRequest.replay_key` names the request independently of which secret signed it,
so a receiver can refuse or fold a replay (docs/connectors/http.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from gateway.errors import VerificationError

__all__ = [
    "SIGNATURE_HEADER",
    "SignedRequest",
    "canonical_path",
    "canonical_query",
    "request_message",
    "sign",
    "sign_request",
    "verify",
    "verify_request",
]

SIGNATURE_HEADER = "X-FlowBiz-Signature"


# -- v1: the body only -----------------------------------------------------------------------
def _digest(secret: str, timestamp: int, body: bytes) -> str:
    # hmac.digest is the one-shot C path: the same MAC as hmac.new(...).hexdigest() without
    # building an HMAC object, which matters when every inbound request is verified.
    return hmac.digest(secret.encode(), b"%d.%b" % (timestamp, body), "sha256").hex()


def sign(secrets: Sequence[str], body: bytes, *, timestamp: int | None = None) -> str:
    """A v1 header for ``body``, signed with every secret given (newest first)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={ts}", *(f"v1={_digest(s, ts, body)}" for s in secrets)])


def _parse(header: str | None) -> tuple[int, list[str], list[str]]:
    """The header's timestamp, v2 entries and v1 entries; VerificationError if unusable."""
    if not header:
        raise VerificationError("missing signature header", reason="missing_signature")
    timestamp: int | None = None
    v2: list[str] = []
    v1: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v2" and value:
            v2.append(value)
        elif key == "v1" and value:
            v1.append(value)
    if timestamp is None or not (v1 or v2):
        raise VerificationError("malformed signature header", reason="malformed_signature")
    return timestamp, v2, v1


def _fresh(timestamp: int, tolerance: float, now: float | None) -> None:
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise VerificationError("signature timestamp outside the window", reason="stale_signature")


def _matches(secrets: Sequence[str], message: bytes, candidates: Sequence[str]) -> bool:
    for secret in secrets:
        expected = hmac.digest(secret.encode(), message, "sha256").hex()
        # compare against every candidate so timing does not reveal which one matched
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return True
    return False


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> int:
    """Check the header's v1 entries against ``body``; return its timestamp or raise."""
    timestamp, _, candidates = _parse(header)
    if not candidates:
        raise VerificationError("malformed signature header", reason="malformed_signature")
    _fresh(timestamp, tolerance, now)
    if _matches(secrets, b"%d.%b" % (timestamp, body), candidates):
        return timestamp
    raise VerificationError("signature does not match", reason="bad_signature")


# -- v2: method, path, query, timestamp and body -------------------------------------------
def canonical_path(path: str) -> str:
    """The path percent-decoded, then encoded again leaving only unreserved bytes and ``/``.

    Two spellings of one path (``%7e`` and ``~``, ``%C3%BC`` and ``ü``) give one form, so
    HTTP libraries that re-encode URLs do not break signatures.
    """
    return quote(unquote(path), safe="/")


def canonical_query(query: str) -> str:
    """The raw query string as sorted ``name=value`` pairs, each RFC 3986-encoded.

    Pairs are decoded as a form would be (``+`` is a space), blank values are kept, repeated
    names stay (sorted by name, then value); ``""`` when there is no query.
    """
    if not query:
        return ""
    pairs = sorted(
        (quote(name, safe=""), quote(value, safe=""))
        for name, value in parse_qsl(query, keep_blank_values=True)
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


@lru_cache(maxsize=4096)
def _target(method: str, path: str, query: str) -> bytes:
    # Cached: on the ingest path every request of a tenant has the same method and path.
    return f"{method.upper()}\n{canonical_path(path)}\n{canonical_query(query)}\n".encode()


def request_message(timestamp: int, method: str, path: str, query: str, body: bytes) -> bytes:
    """The exact bytes a v2 signature covers; ``path`` and ``query`` as sent (raw)."""
    return b"v2\n%d\n%b%b" % (timestamp, _target(method, path, query), body)


def sign_request(
    secrets: Sequence[str],
    method: str,
    target: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    v1: bool = False,
) -> str:
    """A v2 header for a request to ``target`` (a URL or ``/path?query``), one entry per
    secret (newest first); with ``v1``, body-only entries too for receivers not yet on v2."""
    ts = int(time.time()) if timestamp is None else timestamp
    parts = urlsplit(target)
    message = request_message(ts, method, parts.path or "/", parts.query, body)
    entries = [f"t={ts}"]
    entries += [f"v2={hmac.digest(s.encode(), message, 'sha256').hex()}" for s in secrets]
    if v1:
        entries += [f"v1={_digest(s, ts, body)}" for s in secrets]
    return ",".join(entries)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request whose signature verified: when it was signed, by which scheme, over what."""

    timestamp: int
    scheme: Literal["v1", "v2"]
    message: bytes  # the v2 message of this request, whichever scheme verified it

    @property
    def replay_key(self) -> str:
        """Names this exact request (timestamp, method, path, query, body) and nothing else.

        Independent of the secret, so a replay that drops one entry of a rotation pair is
        still the same request.
        """
        return hashlib.sha256(self.message).hexdigest()[:32]


def verify_request(
    header: str | None,
    method: str,
    path: str,
    query: str,
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance: float = 300,
    now: float | None = None,
    accept_v1: bool = False,
) -> SignedRequest:
    """Check a request's signature; ``path`` and ``query`` raw as received.

    v2 entries are checked first. v1 entries (body only) count only with ``accept_v1``;
    a header carrying nothing else is refused with ``legacy_signature`` so a client still on
    v1 learns why.
    """
    timestamp, v2, v1 = _parse(header)
    _fresh(timestamp, tolerance, now)
    message = request_message(timestamp, method, path, query, body)
    if v2 and _matches(secrets, message, v2):
        return SignedRequest(timestamp, "v2", message)
    if v1 and accept_v1:
        if _matches(secrets, b"%d.%b" % (timestamp, body), v1):
            return SignedRequest(timestamp, "v1", message)
    elif v1 and not v2:
        raise VerificationError(
            "v1 signatures (body only) are not accepted here: sign with v2",
            reason="legacy_signature",
        )
    raise VerificationError("signature does not match", reason="bad_signature")
