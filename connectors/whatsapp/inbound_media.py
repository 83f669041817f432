"""Which inbound media URLs the connector fetches with a channel's Twilio credentials.

A ``MediaUrlN`` comes from a signed form, but it is still a URL in a payload: the gateway
sends the account's SID and Auth Token to it only when it is a media resource of that very
account on the Twilio API the channel is configured with (``api_base_url``, else
``https://api.twilio.com``): same scheme, host and port, the path under
``/2010-04-01/Accounts/<the channel's AccountSid>/Messages/``, no credentials of its own,
no ``..``. Anything else is not fetched at all (:func:`media_fetch_for` returns None and
logs ``whatsapp.media_url_refused`` with the host, never the URL's path or query).

Twilio answers a media GET with a redirect to its file host; the fetch follows it, and
aiohttp drops the Authorization header on a redirect to another origin, so the token stays
with the API host.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from connectors.whatsapp.config import WhatsAppChannelConfig
from gateway.media.keeper import MediaFetch
from gateway.models import Attachment
from gateway.observability import get_logger

__all__ = ["TWILIO_API", "media_fetch_for"]

log = get_logger(__name__)

TWILIO_API = "https://api.twilio.com"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def media_fetch_for(config: WhatsAppChannelConfig, attachment: Attachment) -> MediaFetch | None:
    """The authenticated GET of an inbound attachment's ``url``, or None when the URL is
    not one of this account's media resources on its configured Twilio API."""
    url = attachment.url
    if not url or attachment.location is not None:
        return None
    base = config.api_base_url or TWILIO_API
    scheme, host, port, prefix = _origin(base)
    try:
        parts = urlsplit(url)
        theirs = (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)
    except ValueError:  # a port that is not a number
        theirs = ("", "", None)
        parts = None
    ours = f"{prefix}/2010-04-01/Accounts/{config.account_sid}/Messages/"
    if (
        parts is None
        or theirs[0] != scheme
        or theirs[1] != host
        or (theirs[2] if theirs[2] is not None else _DEFAULT_PORTS.get(theirs[0])) != port
        or parts.username is not None
        or parts.password is not None
        or not parts.path.startswith(ours)
        or ".." in parts.path.split("/")
    ):
        log.warning(
            "whatsapp.media_url_refused",
            host=theirs[1] or "?",
            expected_host=host,
        )
        return None
    token = config.auth_token.get_secret_value()
    return MediaFetch(
        url=url,
        headers={"Authorization": aiohttp.encode_basic_auth(config.account_sid, token)},
        follow_redirects=True,
    )
