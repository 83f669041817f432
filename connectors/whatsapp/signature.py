"""Which URL Twilio signed, and the check of ``X-Twilio-Signature`` against it.

Twilio signs the *exact* URL it called (scheme, host, port, path and query) plus the sorted
form parameters. Behind a load balancer that terminates TLS the gateway sees another URL
(``http://10.0.0.5:8080/…``), so it rebuilds the public one, in this order:

1. ``public_base_url`` (the channel's, else ``http.public_base_url``) + the path and query
   as received: the URL configured in the Twilio console;
2. ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (/ ``X-Forwarded-Port``), but only when the
   request's peer address is in ``trusted_proxies``; anyone else could send those headers;
3. the URL as the gateway saw it.

Exactly one URL is checked, so a failure names it (``whatsapp.signature_rejected`` in the
log: the URL and where it came from, never the token).

The check is Twilio's own (HMAC-SHA1 of the URL followed by the sorted parameters, keyed by
the Auth Token, Base64) computed with ``hmac.digest`` once for that URL and compared in
constant time. Only when it does not match are the URL's other forms tried, with and without
the default port, as ``twilio.request_validator.RequestValidator.validate`` accepts them: a
genuine request costs one HMAC, and the set of accepted signatures is the SDK's
(tests/connectors/whatsapp/test_signature_check.py holds the two side by side).
"""

from __future__ import annotations

import binascii
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlparse, urlsplit

from twilio.request_validator import HMAC_SHA1, add_port, get_signature_algorithm, remove_port

from connectors.base import InboundRequest
from gateway.errors import PayloadError, VerificationError
from gateway.observability import get_logger

__all__ = [
    "Form",
    "SignedUrl",
    "compute_signature",
    "form_pairs",
    "parse_form",
    "signature_matches",
    "signed_url",
    "verify_signature",
]

log = get_logger(__name__)

SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
_MAX_FIELDS = 500
_SHORT = 64  # longer form values (a message's Body) are decoded every time, not kept
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]*")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    source: str  # "public_base_url", "x-forwarded" or "request"


@dataclass(frozen=True, slots=True)
class Form:
    """A webhook's form: every pair as sent (what the signature covers) and, per name, the
    first value (what the gateway reads)."""

    pairs: list[tuple[str, str]]
    fields: dict[str, str]


def parse_form(request: InboundRequest) -> Form:
    """The form parameters, every value kept (blank ones too: Twilio signs them)."""
    content_type = request.header("content-type").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise PayloadError(
            "Twilio webhooks are application/x-www-form-urlencoded",
            reason="unsupported_media_type",
            status=415,
        )
    try:
        pairs = form_pairs(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("the form body cannot be decoded") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return Form(pairs, fields)


def form_pairs(text: str) -> list[tuple[str, str]]:
    """``urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict",
    max_num_fields=500)``, in half its time on a webhook's form.

    Only what percent-decoding needs is called per field (the stdlib calls ``unquote`` on
    every name and value, with a conversion step around each), and short encoded values are
    decoded once; the parse is the same, which tests/connectors/whatsapp/test_signature_check.py
    holds against the stdlib's.
    """
    if not text:
        return []
    if text.count("&") >= _MAX_FIELDS:
        raise ValueError("Max number of fields exceeded")
    pairs: list[tuple[str, str]] = []
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        name, value = name.replace("+", " "), value.replace("+", " ")
        if "%" in name:
            name = _unquote(name) if len(name) <= _SHORT else unquote(name, errors="strict")
        if "%" in value:
            value = _unquote(value) if len(value) <= _SHORT else unquote(value, errors="strict")
        pairs.append((name, value))
    return pairs


@lru_cache(maxsize=4096)
def _unquote(text: str) -> str:
    # Names and short values repeat from request to request (To is the channel's number,
    # From one of its customers, whatsapp%3A%2B…): decoded once each, not per request.
    return unquote(text, errors="strict")


def _first(value: str) -> str:
    """The client-facing value of a comma-separated forwarded header."""
    return value.split(",", 1)[0].strip()


def _peer_trusted(remote: str | None, trusted: Sequence[IPNetwork]) -> bool:
    if remote is None or not trusted:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False  # a unix socket or something else that is not an IP address
    return any(address in network for network in trusted)


def _path_query(request: InboundRequest) -> str:
    """The path and query of the URL as received.

    A path of URL-safe characters only is written the same in the URL, so without a query
    it is the answer as it stands, and the URL (a join costing a few microseconds per
    request) is not built.
    """
    path = request.path
    if _PLAIN_PATH.fullmatch(path) is not None and not request.query:
        return path
    seen = urlsplit(request.url)
    return seen.path + (f"?{seen.query}" if seen.query else "")


def signed_url(
    request: InboundRequest,
    *,
    public_base_url: str | None,
    trusted_proxies: Sequence[IPNetwork],
) -> SignedUrl:
    """The URL Twilio must have called for this request (see the module docstring)."""
    if public_base_url:
        return SignedUrl(public_base_url.rstrip("/") + _path_query(request), "public_base_url")
    proto = _first(request.header("x-forwarded-proto"))
    host = _first(request.header("x-forwarded-host"))
    if (proto or host) and _peer_trusted(request.remote, trusted_proxies):
        seen = urlsplit(request.url)
        path_query = seen.path + (f"?{seen.query}" if seen.query else "")
        scheme = proto.lower() or seen.scheme
        netloc = host or seen.netloc
        port = _first(request.header("x-forwarded-port"))
        default_port = "443" if scheme == "https" else "80"
        if port and port != default_port and ":" not in netloc.rsplit("]", 1)[-1]:
            netloc = f"{netloc}:{port}"
        return SignedUrl(f"{scheme}://{netloc}{path_query}", "x-forwarded")
    return SignedUrl(request.url, "request")


def compute_signature(token: bytes, url: str, pairs: Sequence[tuple[str, str]]) -> bytes:
    """Twilio's HMAC-SHA1 signature of ``url`` and the form, Base64 (as in the header)."""
    # Sorting the distinct (name, value) pairs orders names, then each name's values, and
    # counts a repeated pair once: RequestValidator.compute_signature's order, in one sort.
    signed = url + "".join([name + value for name, value in sorted(set(pairs))])
    return binascii.b2a_base64(hmac.digest(token, signed.encode(), "sha1"), newline=False)


def signature_matches(
    token: bytes, url: str, pairs: Sequence[tuple[str, str]], signature: str
) -> bool:
    """Whether ``signature`` is Twilio's for ``url`` (with or without its default port)."""
    given = signature.encode("utf-8", "replace")
    if hmac.compare_digest(compute_signature(token, url, pairs), given):
        return True
    # The SDK accepts the URL with and without the port ("sig generation on back end is
    # inconsistent"); those forms are tried only once the URL as rebuilt has failed.
    try:
        parsed = urlparse(url)
        variants = {remove_port(parsed), add_port(parsed)} - {url}
    except ValueError:  # a port that is not a number: no other form of this URL exists
        return False
    for variant in variants:
        if hmac.compare_digest(compute_signature(token, variant, pairs), given):
            return True
    return False


def verify_signature(
    request: InboundRequest,
    form: Form,
    *,
    token: bytes,
    url: SignedUrl,
    channel: str,
) -> None:
    """Raise VerificationError (403) unless ``X-Twilio-Signature`` matches ``url`` + ``form``."""
    signature = request.header(SIGNATURE_HEADER)
    settings = request.header(SIGNATURE_SETTINGS_HEADER)
    algorithm = get_signature_algorithm(settings) if settings else HMAC_SHA1
    if not signature:
        problem, reason = "no X-Twilio-Signature header", "missing_signature"
    elif algorithm.upper() != HMAC_SHA1:
        # Shared-key signatures (HMAC_SHA256) need the SharedKey secret, not the Auth Token.
        problem, reason = f"unsupported signature algorithm {algorithm!r}", "unsupported_algorithm"
    elif signature_matches(token, url.url, form.pairs, signature):
        return
    else:
        problem, reason = "X-Twilio-Signature does not match", "bad_signature"
    log.warning(
        "whatsapp.signature_rejected",
        channel=channel,
        reason=reason,
        checked_url=url.url,
        url_source=url.source,
        remote=request.remote,
        forwarded_proto=request.header("x-forwarded-proto") or None,
        forwarded_host=request.header("x-forwarded-host") or None,
    )
    raise VerificationError(
        f"{problem}; checked URL {url.url} (from {url.source})", reason=reason, status=403
    )
