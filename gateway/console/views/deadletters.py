"""Dead letters: what could not be handled or delivered, why, and replay or discard.

The same functions as the admin API (:mod:`gateway.deadletters`) and the same decisions:
listing needs ``listDeadLetters``, the payload, replay and discard need the operator
operations; a tenant-scoped key sees its tenant's letters only, and another tenant's
handle answers like a missing one.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from gateway.admin.schemas import DEAD_LETTER_PATTERN
from gateway.console.web import PAGES, Ctx, Page, action, done, page, refusal
from gateway.deadletters import DeadLetter, discard, get_dead_letter, list_dead_letters, replay

__all__ = ["PAGE", "add_routes"]

PAGE = Page(path="/console/dead-letters", title="Dead letters", operation="listDeadLetters")


async def _letter(ctx: Ctx, operation: str) -> tuple[str, DeadLetter]:
    handle = ctx.request.match_info["handle"]
    if (
        re.fullmatch(DEAD_LETTER_PATTERN.strip("^$"), handle) is None
        or int(handle.split(":", 1)[0]) >= ctx.keyspace.partitions
    ):
        raise web.HTTPNotFound(text="no such dead letter")
    letter = await get_dead_letter(ctx.store, ctx.keyspace, handle)
    if letter is None or not ctx.may(operation, letter.tenant or None):
        raise web.HTTPNotFound(text="no such dead letter")
    if ctx.caller.key.tenant is not None and letter.tenant != ctx.caller.key.tenant:
        raise web.HTTPNotFound(text="no such dead letter")
    return handle, letter


@page
async def letters(ctx: Ctx) -> web.StreamResponse:
    scope = ctx.caller.key.tenant
    found = await list_dead_letters(ctx.store, ctx.keyspace, tenant=scope, limit=200)
    return ctx.render(
        "deadletters.html",
        title="Dead letters",
        letters=found,
        may_act=ctx.may("replayDeadLetter", scope),
    )


@page
async def letter(ctx: Ctx) -> web.StreamResponse:
    if not ctx.may("getDeadLetter", ctx.caller.key.tenant):
        return refusal(ctx.request, ctx.caller, 403, "Reading a payload needs the operator role.")
    handle, found = await _letter(ctx, "getDeadLetter")
    payload = json.dumps(found.message, indent=2) if found.message is not None else found.raw
    return ctx.render(
        "deadletter.html",
        title="Dead letter",
        handle=handle,
        letter=found,
        payload=payload or "",
        may_act=ctx.may("replayDeadLetter", found.tenant),
    )


@action
async def act(ctx: Ctx) -> web.StreamResponse:
    name = ctx.request.match_info["action"]
    operation = "replayDeadLetter" if name == "replay" else "discardDeadLetter"
    if not ctx.may(operation, ctx.caller.key.tenant):
        await ctx.audit(operation, ctx.caller.key.tenant, 403)
        return refusal(ctx.request, ctx.caller, 403, "Your role may not do this.")
    handle, found = await _letter(ctx, operation)
    if name == "replay":
        ok = await replay(ctx.store, ctx.keyspace, handle)
        message = "Replayed: back in its queue." if ok else "This letter cannot be replayed."
    else:
        ok = await discard(ctx.store, ctx.keyspace, handle)
        message = "Discarded." if ok else "Already gone."
    await ctx.audit(operation, found.tenant, 200 if ok else 409, handle=handle)
    raise done(PAGE.path, message)


def add_routes(router: web.UrlDispatcher) -> None:
    PAGES.append(PAGE)
    router.add_get(PAGE.path, letters)
    router.add_get(PAGE.path + "/{handle}", letter)
    router.add_post(PAGE.path + "/{handle}/{action:replay|discard}", act)
