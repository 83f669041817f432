"""Live updates over Server-Sent Events: ``GET /console/events?topic=…``.

The server polls the store (every :data:`POLL_SECONDS`) for what the page shows and sends
``event: change`` when it changed; the page's htmx SSE extension then fetches the fresh
fragment. Polling the shared store rather than listening in-process means a message
handled by any worker process, or an operator's action in any web process or at the
Slack desk, reaches every open console within a second.

Topics: ``inbox`` and ``queue`` (the tenants the caller may list: their index entries and
the handoff activity counter) and ``conversation`` (one conversation's state version,
receipts and the activity counter). The caller's session and permission are checked when
the stream opens and again on every poll: a signed-out or revoked key's stream ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from aiohttp import web

from gateway.console.listing import fingerprint
from gateway.console.sessions import session_of
from gateway.console.web import SECURITY_HEADERS, Ctx, page
from gateway.conversations import parse_handle
from gateway.observability import get_logger

__all__ = ["POLL_SECONDS", "add_routes"]

log = get_logger(__name__)

POLL_SECONDS = 0.4
KEEPALIVE_SECONDS = 15.0


async def _conversation_print(ctx: Ctx, key: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    state = await ctx.store.get_state(ctx.keyspace.state(key))
    digest.update(str(state.version if state is not None else 0).encode())
    receipts = await ctx.store.read_log(ctx.keyspace.receipts(key), count=1000)
    digest.update((receipts[-1].id if receipts else "").encode())
    digest.update(str(await ctx.store.incr(ctx.keyspace.console_activity(), 0)).encode())
    return digest.hexdigest()


@page
async def events(ctx: Ctx) -> web.StreamResponse:
    topic = ctx.request.query.get("topic", "inbox")
    key: str | None = None
    if topic == "conversation":
        key = parse_handle(ctx.request.query.get("c", ""))
        if key is None or not ctx.may("listReceipts", key.split("/", 1)[0]):
            raise web.HTTPNotFound()
    elif topic not in ("inbox", "queue"):
        raise web.HTTPNotFound()
    response = web.StreamResponse(
        headers={
            **SECURITY_HEADERS,
            "Content-Type": "text/event-stream",
            "X-Accel-Buffering": "no",  # a buffering proxy would hold the events back
        }
    )
    await response.prepare(ctx.request)
    last = ""
    quiet_since = time.monotonic()
    try:
        while True:
            caller = await session_of(ctx.store, ctx.keyspace, ctx.request)
            if caller is not None:
                ctx.caller = caller  # the key as it is now: a changed role applies at once
            if caller is None or (key is None and not ctx.tenants()):
                await response.write(b"event: signed-out\ndata: -\n\n")
                break
            current = (
                await _conversation_print(ctx, key)
                if key is not None
                else await fingerprint(ctx.store, ctx.keyspace, ctx.tenants())
            )
            if current != last:
                if last:
                    await response.write(b"event: change\ndata: " + current.encode() + b"\n\n")
                last = current
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            await asyncio.sleep(POLL_SECONDS)
    except ConnectionResetError:
        pass  # the page went away
    return response


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/console/events", events)
