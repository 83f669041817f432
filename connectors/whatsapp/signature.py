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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from multidict import MultiDict
from twilio.request_validator import HMAC_SHA1, RequestValidator, get_signature_algorithm

from connectors.base import InboundRequest
from gateway.errors import PayloadError, VerificationError
from gateway.observability import get_logger

__all__ = ["SignedUrl", "parse_form", "signed_url", "verify_signature"]

log = get_logger(__name__)

SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
_MAX_FIELDS = 500

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    source: str  # "public_base_url", "x-forwarded" or "request"


def parse_form(request: InboundRequest) -> MultiDict[str]:
    """The form parameters, every value kept (blank ones too: Twilio signs them)."""
    content_type = request.header("content-type").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise PayloadError(
            "Twilio webhooks are application/x-www-form-urlencoded",
            reason="unsupported_media_type",
            status=415,
        )
    try:
        text = request.body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("the form body cannot be decoded") from exc
    return MultiDict(pairs)


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


def signed_url(
    request: InboundRequest,
    *,
    public_base_url: str | None,
    trusted_proxies: Sequence[IPNetwork],
) -> SignedUrl:
    """The URL Twilio must have called for this request (see the module docstring)."""
    seen = urlsplit(request.url)
    path_query = seen.path + (f"?{seen.query}" if seen.query else "")
    if public_base_url:
        return SignedUrl(public_base_url.rstrip("/") + path_query, "public_base_url")
    proto = _first(request.header("x-forwarded-proto"))
    host = _first(request.header("x-forwarded-host"))
    if (proto or host) and _peer_trusted(request.remote, trusted_proxies):
        scheme = proto.lower() or seen.scheme
        netloc = host or seen.netloc
        port = _first(request.header("x-forwarded-port"))
        default_port = "443" if scheme == "https" else "80"
        if port and port != default_port and ":" not in netloc.rsplit("]", 1)[-1]:
            netloc = f"{netloc}:{port}"
        return SignedUrl(f"{scheme}://{netloc}{path_query}", "x-forwarded")
    return SignedUrl(request.url, "request")


def verify_signature(
    request: InboundRequest,
    form: MultiDict[str],
    *,
    validator: RequestValidator,
    url: SignedUrl,
    channel: str,
) -> None:
    """Raise VerificationError (403) unless ``X-Twilio-Signature`` matches ``url`` + ``form``."""
    signature = request.header(SIGNATURE_HEADER)
    algorithm = get_signature_algorithm(request.header(SIGNATURE_SETTINGS_HEADER) or None)
    if not signature:
        problem, reason = "no X-Twilio-Signature header", "missing_signature"
    elif algorithm.upper() != HMAC_SHA1:
        # Shared-key signatures (HMAC_SHA256) need the SharedKey secret, not the Auth Token.
        problem, reason = f"unsupported signature algorithm {algorithm!r}", "unsupported_algorithm"
    elif validator.validate(url.url, form, signature):
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
