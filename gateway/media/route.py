"""``GET /media/{blob}``: a kept file, for whoever holds a signed link to it.

Served on the public listener, since the platforms that fetch files by URL (LINE, Twilio)
and the webhook agents call it from outside. Guarantees: nothing is read from the store
before the link verifies (a forged, altered or expired link costs one HMAC); the answer
never lets a browser run it — ``Content-Type`` is the type the bytes were judged to be,
with ``X-Content-Type-Options: nosniff``, a sandboxing ``Content-Security-Policy`` and, for
anything but images, audio and video, ``Content-Disposition: attachment``; the name given
in that header is the kept file's, encoded (RFC 6266), never a header of its own. A blob
store that fails answers 503 (the fetching platform may try again), never a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from gateway.media.blobs import BlobNotFound, BlobStoreError
from gateway.media.service import MediaService

__all__ = ["MEDIA_PATH", "media_handler"]

MEDIA_PATH = "/media/{blob}"

_INLINE = ("image/", "audio/", "video/")


def media_handler(
    service: Callable[[], MediaService | None],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        media = service()
        if media is None:
            raise web.HTTPServiceUnavailable(text="files are not served by this process")
        blob = request.match_info["blob"]
        query = request.query
        count = media.metrics.media_links.labels
        if not media.links.verify(blob, query.get("exp", ""), query.get("sig", "")):
            count("expired_or_forged").inc()
            raise web.HTTPForbidden(text="this link is expired or not valid")
        try:
            info, data = await media.blobs.get(blob)
        except BlobNotFound:
            count("not_found").inc()
            raise web.HTTPNotFound(text="this file is no longer kept") from None
        except BlobStoreError:
            # The bucket or the disk failed: the platform fetching may try again later.
            count("store_failed").inc()
            raise web.HTTPServiceUnavailable(text="the file store is out of reach") from None
        count("served").inc()
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, max-age=300",
        }
        disposition = "inline" if info.content_type.startswith(_INLINE) else "attachment"
        if info.name:
            disposition += f"; filename*=UTF-8''{quote(info.name, safe='')}"
        headers["Content-Disposition"] = disposition
        return web.Response(body=data, content_type=info.content_type, headers=headers)

    return handle
