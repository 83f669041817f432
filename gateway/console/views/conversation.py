"""One conversation: history, receipts, trace id, persona and why; the people's actions.

Who may do what is the admin API's decision for the conversation's tenant: the page needs
``listReceipts`` (viewer), the history ``getConversation`` (operator), every handoff action
(take over, reply, note, assign, release) ``sendMessage`` (operator), export
``exportConversation`` and erase ``eraseConversation`` (admin). Another tenant's
conversation answers exactly like one that does not exist (404).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from gateway.console.listing import STATES
from gateway.console.web import Ctx, action, done, page, refusal
from gateway.contacts import ContactBook
from gateway.contacts.names import NameCache
from gateway.conversations import (
    conversation_handle,
    conversation_participants,
    erase_conversation,
    export_conversation,
    parse_handle,
    read_index_entry,
    read_receipts,
    read_state,
)
from gateway.errors import StoreError
from gateway.handoff import HandoffDesk, handoff_fact, handoff_status, holder_of
from gateway.media.blobs import BlobStoreError
from gateway.models import PersonaPresentation, new_id
from gateway.state import ConversationState
from gateway.takeover import ActionResult, HandoffActions

__all__ = ["add_routes"]

BASE = "/console/c/"
_MAX_TEXT = 4000


def _key(ctx: Ctx) -> tuple[str, str]:
    """(conversation key, tenant) of the path's handle, if the caller may see it; else 404."""
    key = parse_handle(ctx.request.match_info["handle"])
    tenant = key.split("/", 1)[0] if key is not None else ""
    if key is None or not ctx.may("listReceipts", tenant):
        raise web.HTTPNotFound(text="no such conversation")
    return key, tenant


def _actions(ctx: Ctx) -> HandoffActions:
    rt = ctx.runtime
    desk = (
        rt.worker.handoff
        if rt.worker is not None
        else HandoffDesk(
            desks=rt.config.handoff_desks(),
            store=ctx.store,
            keyspace=ctx.keyspace,
            history_limit=rt.config.pipeline.history_limit,
        )
    )
    return HandoffActions(desk)


async def _view(ctx: Ctx) -> dict[str, Any]:
    key, tenant = _key(ctx)
    entry = await read_index_entry(ctx.store, ctx.keyspace, tenant, key)
    state = await read_state(ctx.store, ctx.keyspace, key)
    if entry is None and state is None:
        raise web.HTTPNotFound(text="no such conversation")
    readable = ctx.may("getConversation", tenant)
    fact = handoff_fact(state) if state is not None else None
    # Names and contacts are the customer's data: shown to whoever may read the history.
    return {
        "handle": conversation_handle(key),
        "tenant": tenant,
        "entry": entry,
        "state": state,
        "state_label": STATES[handoff_status(state) if state is not None else "bot"],
        "fact": fact,
        "holder": holder_of(fact),
        "history": list(state.history) if state is not None and readable else None,
        "people": await _people(ctx, tenant, key) if readable else [],
        "notes": await _actions(ctx).notes(key) if readable else [],
        "receipts": await read_receipts(ctx.store, ctx.keyspace, key),
        "may_read": readable,
        "may_act": ctx.may("sendMessage", tenant),
        "may_export": ctx.may("exportConversation", tenant),
        "may_erase": ctx.may("eraseConversation", tenant),
        "reply_id": new_id(),
    }


async def _people(ctx: Ctx, tenant: str, key: str) -> list[dict[str, Any]]:
    """Who wrote here: the name their platform gave (cached) and their contact, if linked."""
    book = ContactBook(ctx.store, ctx.keyspace)
    people = []
    for identity in await conversation_participants(ctx.store, ctx.keyspace, key):
        raw = await ctx.store.get_record(
            ctx.keyspace.contact_name(tenant, identity.channel.value, identity.id)
        )
        people.append(
            {
                "id": identity.id,
                "name": NameCache.name_in(raw),
                "contact": await book.of_identity(tenant, identity.channel, identity.id),
            }
        )
    return people


@page
async def conversation(ctx: Ctx) -> web.StreamResponse:
    view = await _view(ctx)
    return ctx.render("conversation.html", title="Conversation", **view)


@page
async def conversation_body(ctx: Ctx) -> web.StreamResponse:
    return ctx.render("_conversation_body.html", **await _view(ctx))


@page
async def conversation_actions(ctx: Ctx) -> web.StreamResponse:
    """The actions that depend on the handoff state, redrawn on every live change."""
    return ctx.render("_conversation_actions.html", **await _view(ctx))


@page
async def export(ctx: Ctx) -> web.StreamResponse:
    key, tenant = _key(ctx)
    if not ctx.may("exportConversation", tenant):
        return refusal(ctx.request, ctx.caller, 403, "Exporting needs the operator role.")
    try:
        data = await export_conversation(
            ctx.store, ctx.keyspace, tenant, key, media=ctx.runtime.media
        )
    except BlobStoreError as exc:
        raise StoreError("the file store is out of reach") from exc
    if data is None:
        raise web.HTTPNotFound(text="no such conversation")
    await ctx.audit("exportConversation", tenant, 200, conversation=key)
    return web.Response(
        body=json.dumps(data, indent=2).encode(),
        content_type="application/json",
        headers={
            "Content-Disposition": (
                f'attachment; filename="conversation-{conversation_handle(key)[:40]}.json"'
            ),
            "Cache-Control": "no-store",
        },
    )


async def _state(ctx: Ctx, key: str) -> ConversationState:
    state = await read_state(ctx.store, ctx.keyspace, key)
    if state is None:
        raise web.HTTPNotFound(text="no such conversation")
    return state


@action
async def act(ctx: Ctx) -> web.StreamResponse:
    key, tenant = _key(ctx)
    name = ctx.request.match_info["action"]
    here = BASE + conversation_handle(key)
    needed = "eraseConversation" if name == "erase" else "sendMessage"
    if not ctx.may(needed, tenant):
        await ctx.audit(name, tenant, 403, conversation=key)
        return refusal(ctx.request, ctx.caller, 403, "Your role may not do this here.")
    operator = ctx.caller.name
    text = ctx.form.get("text", "").strip()[:_MAX_TEXT]
    actions = _actions(ctx)
    result: ActionResult
    if name == "erase":
        if ctx.form.get("confirm", "").strip() != "erase":
            raise done(here, "Type erase to confirm.")
        try:
            await erase_conversation(
                ctx.store,
                ctx.keyspace,
                tenant,
                key,
                desks=ctx.runtime.config.handoff_desks(),
                media=ctx.runtime.media,
            )
        except BlobStoreError as exc:
            # Nothing was erased yet (the files go first): the operator tries again.
            raise StoreError("the file store is out of reach") from exc
        await ctx.audit("eraseConversation", tenant, 200, conversation=key)
        raise done("/console/inbox", "Conversation erased.")
    if name == "note":
        if not text:
            raise done(here, "Write a note first.")
        await _state(ctx, key)
        result = await actions.add_note(key, operator, text)
    else:
        customer = (await _state(ctx, key)).conversation
        if name == "take-over":
            state = await _state(ctx, key)
            persona = ctx.runtime.personas.get(state.persona or "")
            presentation = (
                persona.presentation
                if persona is not None
                else PersonaPresentation(name="assistant", display_name="Assistant")
            )
            force = ctx.form.get("force") == "1"
            result = await actions.take_over(customer, operator, persona=presentation, force=force)
        elif name == "reply":
            reply_id = ctx.form.get("reply_id", "")
            if not text or re.fullmatch(r"[0-9a-f-]{1,64}", reply_id) is None:
                raise done(here, "Write a reply first.")
            result = await actions.reply(customer, operator, text, reply_id=reply_id)
        elif name == "assign":
            teammate = ctx.form.get("teammate", "").strip()[:100]
            if not teammate:
                raise done(here, "Name a teammate.")
            result = await actions.assign(customer, operator, teammate)
        elif name == "release":
            result = await actions.release(customer, operator)
        else:
            raise web.HTTPNotFound()
    await ctx.audit(name, tenant, 200 if result.ok else 409, conversation=key)
    raise done(here, result.message)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(BASE + "{handle}", conversation)
    router.add_get(BASE + "{handle}/body", conversation_body)
    router.add_get(BASE + "{handle}/actions", conversation_actions)
    router.add_get(BASE + "{handle}/export", export)
    router.add_post(BASE + "{handle}/{action:take-over|reply|note|assign|release|erase}", act)
