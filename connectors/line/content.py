"""Where the files people send on LINE are fetched from: LINE's content API, by message id.

Guarantees: the URL is built by the gateway — the channel's configured data-API base
(``data_api_base_url``, ``https://api-data.line.me`` by default) and ``/v2/bot/message/{id}
/content`` with a message id that is digits only — and carries the channel's access token.
Nothing a sender wrote becomes a URL we fetch: content whose ``contentProvider`` is
``external`` (an ``originalContentUrl`` on the sender's side) is not fetched at all, and stays
metadata. Stickers and places have no content to fetch.
"""

from __future__ import annotations

from connectors.line.config import LineChannelConfig
from gateway.media import MediaFetch
from gateway.parts import Attachment

__all__ = ["content_fetch"]

_FETCHED_KINDS = frozenset({"image", "video", "audio", "file"})
_MAX_ID_DIGITS = 40


def content_fetch(channel: LineChannelConfig, attachment: Attachment) -> MediaFetch | None:
    """The GET for one inbound attachment's bytes, or None when it has none LINE keeps."""
    if attachment.kind not in _FETCHED_KINDS:
        return None
    provider = attachment.extra.get("provider", "line")
    if provider != "line":
        return None  # kept by the sender's side: a URL a stranger chose is never fetched
    message_id = attachment.extra.get("message_id")
    if (
        not isinstance(message_id, str)
        or not message_id.isascii()
        or not message_id.isdigit()
        or len(message_id) > _MAX_ID_DIGITS
    ):
        return None  # LINE's message ids are digits: anything else is not one of its files
    base = channel.data_api_base_url.rstrip("/")
    token = channel.channel_access_token.get_secret_value()
    return MediaFetch(
        url=f"{base}/v2/bot/message/{message_id}/content",
        headers={"Authorization": f"Bearer {token}"},
    )
