"""Personas and the playground.

The page lists each persona as the admin API's ``listPersonas`` does (agent, tools, prompt
versions) and who may reach it: the table ``flowbiz check`` prints
(:func:`gateway.reach_report.reach_report`), limited to the tenants the caller may see.

The playground talks to a persona the way a customer's system does: a v2-signed request
(or, for a channel with API keys only, the channel's key) to the gateway's own HTTP API
channel of the chosen tenant, on this process's public listener; the answer is read back
from that conversation's replies log, where the HTTP connector's send path wrote it. The
reply is then shown as each connector would render it (:mod:`gateway.console.previews`).
Using it needs ``sendMessage`` (operator or above) on the tenant — asked again on every
POST — and it counts as the tenant's traffic (usage, quota, the inbox) like any message.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from connectors.http_api.connector import HttpChannelConfig
from gateway.console.previews import previews
from gateway.console.web import PAGES, Ctx, Page, action, page, refusal
from gateway.conversations import conversation_handle
from gateway.models import (
    Attachment,
    Button,
    Card,
    Channel,
    ConversationKey,
    OptionList,
    OutboundMessage,
    PersonaPresentation,
    new_id,
)
from gateway.observability import get_logger
from gateway.reach import block_point, reachable
from gateway.reach_report import reach_report
from gateway.signing import SIGNATURE_HEADER, sign_request

__all__ = ["PAGE", "add_routes"]

log = get_logger(__name__)

PAGE = Page(path="/console/personas", title="Personas", operation="listPersonas")
PLAYGROUND = PAGE.path + "/playground"
_MAX_TEXT = 2000
_SETTLE_SECONDS = 0.3  # after the first reply, how long to wait for more parts of the answer


class PlaygroundError(Exception):
    """The playground could not ask; the message says why, for the page."""


def _http_channel(ctx: Ctx, tenant: str) -> HttpChannelConfig | None:
    config = ctx.runtime.config.tenant(tenant)
    if config is None:
        return None
    return next((c for c in config.channels if isinstance(c, HttpChannelConfig)), None)


def _playground_tenants(ctx: Ctx) -> list[str]:
    """Tenants the caller may send on that have an HTTP API channel to talk through."""
    return [t for t in ctx.tenants("sendMessage") if _http_channel(ctx, t) is not None]


def _view(ctx: Ctx, **extra: Any) -> web.Response:
    rt = ctx.runtime
    visible = set(ctx.tenants("listPersonas"))
    report = reach_report(rt.config, rt.personas)
    tenants = _playground_tenants(ctx)
    values: dict[str, Any] = {
        "title": "Personas",
        "personas": sorted(rt.personas.values(), key=lambda p: p.name),
        "reach": [row for row in report.rows if row[0] in visible],
        "warnings": report.warnings if ctx.caller.key.tenant is None else [],
        "playground_tenants": tenants,
        "chosen": {"tenant": tenants[0] if tenants else "", "persona": "", "text": ""},
        "result": None,
        "error": "",
        "handle": "",
    }
    values.update(extra)
    return ctx.render("personas.html", status=400 if values["error"] else 200, **values)


@page
async def personas(ctx: Ctx) -> web.StreamResponse:
    return _view(ctx)


async def _replies_after(ctx: Ctx, key: str, cursor: str | None) -> tuple[list[Any], str | None]:
    entries = await ctx.store.read_log(ctx.keyspace.replies(key), after=cursor, count=100)
    return [json.loads(e.payload) for e in entries], (entries[-1].id if entries else cursor)


async def _ask(ctx: Ctx, tenant: str, persona: str, text: str) -> dict[str, Any]:
    rt = ctx.runtime
    channel = _http_channel(ctx, tenant)
    tenant_config = rt.config.tenant(tenant)
    target = rt.personas.get(persona)
    if channel is None or tenant_config is None:
        raise PlaygroundError(f"Tenant {tenant} has no HTTP API channel to talk through.")
    if target is None:
        raise PlaygroundError("No such persona.")
    point = block_point(rt.config, tenant_config, channel)
    if not reachable(target, point):
        raise PlaygroundError(
            f"{persona} may not answer on {tenant}'s HTTP channel (see the reach table)."
        )
    if rt.public_url is None:
        raise PlaygroundError("This process serves no public listener to send through.")
    conversation_id = f"playground-{ctx.caller.key.id}-{persona}"
    conversation = ConversationKey(
        tenant=tenant, channel=Channel.HTTP, conversation_id=conversation_id
    )
    key = conversation.key
    # Start after the replies already in the log: only this question's answer is shown.
    _, cursor = await _replies_after(ctx, key, None)
    while True:
        more, after = await _replies_after(ctx, key, cursor)
        if not more:
            break
        cursor = after
    switch = rt.config.routing.switch_command
    body = json.dumps(
        {
            "conversation_id": conversation_id,
            "event_id": new_id(),
            "user": {"id": f"console:{ctx.caller.key.id}", "name": f"{ctx.caller.name} (console)"},
            "text": f"{switch} {persona} {text}" if point.switch else text,
        }
    ).encode()
    path = f"/v1/channels/http/{tenant}/messages"
    headers = {"Content-Type": "application/json"}
    if channel.signing_secrets:
        secrets = [s.get_secret_value() for s in channel.signing_secrets]
        headers[SIGNATURE_HEADER] = sign_request(secrets[:1], "POST", path, body)
    else:
        headers["Authorization"] = f"Bearer {channel.api_keys[0].get_secret_value()}"
    try:
        async with rt.context.http.post(
            rt.public_url + path,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            answer = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise PlaygroundError(f"The HTTP channel did not answer: {type(exc).__name__}") from exc
    if status != 202 or not isinstance(answer, dict):
        raise PlaygroundError(f"The HTTP channel answered {status}.")
    inbound_id = answer.get("id")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + rt.config.pipeline.agent_timeout_seconds + 5
    found: list[Any] = []
    settle: float | None = None
    while loop.time() < deadline and (settle is None or loop.time() < settle):
        more, cursor = await _replies_after(ctx, key, cursor)
        found += [r for r in more if r.get("in_reply_to") == inbound_id]
        if found and settle is None:
            settle = loop.time() + _SETTLE_SECONDS
        await asyncio.sleep(0.05)
    if not found:
        raise PlaygroundError("No answer within the agent timeout; see the conversation.")
    return {"replies": found, "conversation": conversation}


def _outbound(reply: dict[str, Any], key: ConversationKey) -> OutboundMessage:
    """The reply read back from the replies log, every part kept, so that each preview
    shows the cards, quick replies and option list as its platform would."""
    options = reply.get("options")
    return OutboundMessage(
        conversation=key,
        persona=PersonaPresentation.model_validate(reply["persona"]),
        text=reply.get("text") or "",
        buttons=tuple(Button.model_validate(b) for b in reply.get("buttons") or ()),
        attachments=tuple(Attachment.model_validate(a) for a in reply.get("attachments") or ()),
        quick_replies=tuple(Button.model_validate(b) for b in reply.get("quick_replies") or ()),
        cards=tuple(Card.model_validate(c) for c in reply.get("cards") or ()),
        options=None if options is None else OptionList.model_validate(options),
        idempotency_key=str(reply.get("idempotency_key") or new_id()),
    )


@action
async def playground(ctx: Ctx) -> web.StreamResponse:
    tenant = ctx.form.get("tenant", "").strip()
    persona = ctx.form.get("persona", "").strip()
    text = ctx.form.get("text", "").strip()[:_MAX_TEXT]
    if not ctx.may("sendMessage", tenant) or ctx.runtime.config.tenant(tenant) is None:
        await ctx.audit("playground", tenant or None, 403, persona=persona)
        return refusal(ctx.request, ctx.caller, 403, "The playground needs the operator role.")
    chosen = {"tenant": tenant, "persona": persona, "text": text}
    if not text:
        return _view(ctx, chosen=chosen, error="Write a message first.")
    try:
        asked = await _ask(ctx, tenant, persona, text)
        conversation: ConversationKey = asked["conversation"]
        tenant_config = ctx.runtime.config.tenant(tenant)
        result = [
            {"reply": r, "previews": previews(_outbound(r, conversation), tenant_config)}
            for r in asked["replies"]
        ]
    except PlaygroundError as exc:
        await ctx.audit("playground", tenant, 409, persona=persona)
        return _view(ctx, chosen=chosen, error=str(exc))
    except (ValidationError, KeyError) as exc:
        log.warning("console.playground_bad_reply", error=type(exc).__name__)
        return _view(ctx, chosen=chosen, error="The reply could not be read back.")
    await ctx.audit("playground", tenant, 200, persona=persona)
    handle = conversation_handle(conversation.key)
    return _view(ctx, chosen=chosen, result=result, handle=handle)


def add_routes(router: web.UrlDispatcher) -> None:
    PAGES.append(PAGE)
    router.add_get(PAGE.path, personas)
    router.add_post(PLAYGROUND, playground)
