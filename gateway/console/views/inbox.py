"""The inbox: every conversation the caller may list, newest activity first, filtered and
searched; the rows refresh live (an ``inbox`` event from :mod:`gateway.console.live`)."""

from __future__ import annotations

from aiohttp import web

from gateway.console.listing import STATES, Filters, rows
from gateway.console.web import PAGES, Ctx, Page, page

__all__ = ["PAGE", "add_routes"]

PAGE = Page(path="/console/inbox", title="Inbox", operation="listConversations")


async def _rows(ctx: Ctx, filters: Filters) -> list[object]:
    tenants = ctx.tenants()
    readable = set(ctx.tenants("getConversation"))
    return list(await rows(ctx.store, ctx.keyspace, tenants, filters, readable=readable))


@page
async def inbox(ctx: Ctx) -> web.StreamResponse:
    filters = Filters.of(ctx.request.query)
    return ctx.render(
        "inbox.html",
        title="Inbox",
        filters=filters,
        rows=await _rows(ctx, filters),
        tenants=ctx.tenants(),
        channels=sorted({c.kind for t in ctx.runtime.config.tenants for c in t.channels}),
        personas=sorted(ctx.runtime.personas),
        states=STATES,
        may_read=bool(ctx.tenants("getConversation")),
    )


@page
async def inbox_rows(ctx: Ctx) -> web.StreamResponse:
    filters = Filters.of(ctx.request.query)
    return ctx.render("_inbox_rows.html", rows=await _rows(ctx, filters))


def add_routes(router: web.UrlDispatcher) -> None:
    PAGES.append(PAGE)
    router.add_get(PAGE.path, inbox)
    router.add_get(PAGE.path + "/rows", inbox_rows)
