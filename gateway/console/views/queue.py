"""The handoff queue: conversations waiting for a person, the longest-waiting first."""

from __future__ import annotations

from aiohttp import web

from gateway.console.listing import Filters, Row, rows
from gateway.console.web import PAGES, Ctx, Page, page

__all__ = ["PAGE", "add_routes"]

PAGE = Page(path="/console/queue", title="Handoff queue", operation="listConversations")


async def _waiting(ctx: Ctx) -> list[Row]:
    found = await rows(
        ctx.store,
        ctx.keyspace,
        ctx.tenants(),
        Filters(state="waiting"),
        readable=set(ctx.tenants("getConversation")),
    )
    return sorted(found, key=lambda r: (r.waiting_since is None, r.waiting_since or r.activity))


@page
async def queue(ctx: Ctx) -> web.StreamResponse:
    return ctx.render("queue.html", title="Handoff queue", rows=await _waiting(ctx))


@page
async def queue_rows(ctx: Ctx) -> web.StreamResponse:
    return ctx.render("_queue_rows.html", rows=await _waiting(ctx))


def add_routes(router: web.UrlDispatcher) -> None:
    PAGES.append(PAGE)
    router.add_get(PAGE.path, queue)
    router.add_get(PAGE.path + "/rows", queue_rows)
