"""Keeping the files people send: fetched in the worker, judged on their bytes, stored.

A connector that can fetch its platform's files implements :class:`MediaSource`: for one
inbound attachment it says how to get the bytes (:class:`MediaFetch`: a GET with the
platform's own credentials to a URL it built or checked, or the bytes themselves for a MIME
part). :func:`keep_attachment` then, never on the acknowledged path:

- refuses a file the platform already says is too big, without fetching it;
- reads at most ``max_bytes`` + 1 bytes (``Content-Length`` first, then the stream), so a
  lying or endless response costs no more than the limit;
- judges the content type on the bytes (``filetype``'s magic numbers; text only if it is
  valid UTF-8), never on what the sender or the platform claimed;
- stores what passes in the blob store and returns the attachment with ``blob``, ``sha256``,
  the real ``size`` and ``mime_type``; anything else returns it with ``refused`` set to the
  reason (``too_large``, ``type_not_allowed``, ``fetch_failed``, ``not_stored``) and counts it in
  ``flowbiz_media_total{direction="in"}``. The message itself always goes on: its text
  reaches the agent whatever happened to its files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import aiohttp
import filetype

from gateway.media.blobs import BlobStore
from gateway.media_config import MediaLimits
from gateway.metrics import Metrics
from gateway.models import Attachment, InboundMessage
from gateway.observability import get_logger

__all__ = ["MediaFetch", "MediaSource", "keep_attachment", "sniff_content_type"]

log = get_logger(__name__)

_CHUNK = 64 * 1024
_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)


@dataclass(frozen=True, slots=True)
class MediaFetch:
    """How to get one inbound file's bytes: a GET, or the bytes already at hand."""

    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: aiohttp.BasicAuth | None = None
    data: bytes | None = None
    # Platforms that answer with a redirect to their file host (Twilio) set this.
    follow_redirects: bool = False


@runtime_checkable
class MediaSource(Protocol):
    async def media_fetch(
        self, message: InboundMessage, attachment: Attachment
    ) -> MediaFetch | None:
        """How to fetch ``attachment``'s bytes, or None when it has none to fetch (a place,
        a sticker, a file the platform does not keep)."""
        ...


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sniff_content_type(data: bytes) -> str:
    """The type the bytes are, from their magic numbers: never what anyone claimed."""
    kind = filetype.guess_mime(data[:8192])
    if kind is not None:
        return str(kind)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


async def _read_capped(http: aiohttp.ClientSession, fetch: MediaFetch, max_bytes: int) -> bytes:
    assert fetch.url is not None
    try:
        async with http.get(
            fetch.url,
            headers=dict(fetch.headers),
            auth=fetch.auth,
            allow_redirects=fetch.follow_redirects,
            max_redirects=3,
            timeout=_FETCH_TIMEOUT,
        ) as response:
            if response.status != 200:
                raise _Refused("fetch_failed")
            if response.content_length is not None and response.content_length > max_bytes:
                raise _Refused("too_large")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise _Refused("too_large")
                chunks.append(chunk)
            return b"".join(chunks)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        # ValueError: a URL aiohttp cannot use. The platform's file is out of reach.
        raise _Refused("fetch_failed") from None


async def keep_attachment(
    message: InboundMessage,
    attachment: Attachment,
    *,
    source: MediaSource,
    blobs: BlobStore,
    http: aiohttp.ClientSession,
    limits: MediaLimits,
    metrics: Metrics,
) -> Attachment:
    """The attachment with its bytes kept (``blob``) or with why not (``refused``)."""
    if attachment.blob is not None or attachment.refused is not None:
        return attachment  # judged already (a message parsed again after a retry)
    channel = message.conversation.channel.value
    try:
        fetch = await source.media_fetch(message, attachment)
        if fetch is None:
            return attachment
        if attachment.size is not None and attachment.size > limits.max_bytes:
            raise _Refused("too_large")
        if fetch.data is not None:
            data = fetch.data
            if len(data) > limits.max_bytes:
                raise _Refused("too_large")
        else:
            data = await _read_capped(http, fetch, limits.max_bytes)
        content_type = sniff_content_type(data)
        if not limits.allows(content_type):
            raise _Refused("type_not_allowed")
        info = await blobs.put(
            tenant=message.conversation.tenant,
            conversation_key=message.conversation.key,
            data=data,
            content_type=content_type,
            name=attachment.name,
        )
    except OSError:
        # The blob store failed (a full disk, an unreachable bucket): the file is lost to
        # this message, the message is not. Counted and logged as an error.
        metrics.media.labels(channel, "in", "not_stored").inc()
        log.error("media.not_stored", kind=attachment.kind, event_id=message.event_id)
        return attachment.model_copy(update={"refused": "not_stored"})
    except _Refused as refused:
        metrics.media.labels(channel, "in", refused.reason).inc()
        log.warning(
            "media.refused", reason=refused.reason, kind=attachment.kind, event_id=message.event_id
        )
        return attachment.model_copy(update={"refused": refused.reason})
    metrics.media.labels(channel, "in", "kept").inc()
    return attachment.model_copy(
        update={
            "blob": info.id,
            "sha256": info.sha256,
            "size": info.size,
            "mime_type": info.content_type,
        }
    )
