"""The admin API's handlers: one coroutine per operation, each given a checked :class:`Call`.

A handler runs only after the gate in :mod:`gateway.admin.routes` authenticated the caller,
authorised the operation and parsed the path, query and body; it answers with
:func:`~gateway.admin.operation.json_response` or raises
:class:`~gateway.admin.operation.ApiError`. A tenant-scoped key sees only its tenant in the
lists that span tenants (keys, dead letters, the audit log).
"""

from __future__ import annotations

from aiohttp import web

from agents.base import ReplyPart
from agents.webhook_answer import BotAnswer, BotPart, InvalidAnswer, checked_reply
from gateway.admin import keys as apikeys
from gateway.admin.keys import ApiKey
from gateway.admin.operation import (
    RETRY_AFTER_SECONDS,
    ApiError,
    Call,
    json_response,
)
from gateway.admin.schemas import (
    Accepted,
    AuditItem,
    AuditList,
    AuditQuery,
    ChannelView,
    ConsumerHealth,
    ConversationExport,
    ConversationList,
    ConversationSummary,
    ConversationView,
    DeadLetterList,
    DeadLetterQuery,
    DeadLetterView,
    EraseResult,
    Health,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyView,
    LimitQuery,
    PersonaList,
    PersonaView,
    PlanChange,
    ProactiveMessage,
    ReceiptList,
    ReloadResult,
    ReplayResult,
    TenantList,
    TenantView,
    ToolList,
    ToolView,
    UsageQuery,
    UsageReport,
)
from gateway.audit import AuditLog
from gateway.config import TenantConfig
from gateway.conversations import (
    conversation_handle,
    erase_conversation,
    export_conversation,
    list_conversations,
    read_index_entry,
    read_receipts,
    read_state,
)
from gateway.deadletters import discard, get_dead_letter, list_dead_letters, replay
from gateway.errors import ConfigError, StoreError
from gateway.media.blobs import BlobStoreError
from gateway.models import ConversationKey, OutboundMessage, new_id
from gateway.persona_sync import reload_personas
from gateway.runtime import Runtime
from gateway.store import Commit
from gateway.usage import METRICS, read_usage

__all__ = [
    "create_key",
    "discard_dead_letter",
    "erase",
    "export",
    "get_audit",
    "get_conversation",
    "get_conversations",
    "get_dead_letter_view",
    "get_dead_letters",
    "get_personas",
    "get_quota",
    "get_receipts",
    "get_tenant",
    "get_tools",
    "get_usage",
    "health",
    "health_of",
    "list_keys",
    "list_tenants",
    "reload",
    "replay_dead_letter",
    "revoke_key",
    "send_message",
    "set_plan",
    "tenant_view",
]


# -- keys ------------------------------------------------------------------------------------------
def _key_view(key: ApiKey) -> KeyView:
    return KeyView(
        id=key.id,
        name=key.name,
        role=key.role,
        tenant=key.tenant,
        created_at=key.created_at,
        created_by=key.created_by,
        revoked_at=key.revoked_at,
    )


async def list_keys(call: Call) -> web.StreamResponse:
    found = await apikeys.list_keys(call.store, call.runtime.keyspace, tenant=call.key.tenant)
    return json_response(KeyList(keys=[_key_view(k) for k in found]))


async def create_key(call: Call) -> web.StreamResponse:
    body: KeyCreate = call.body
    if call.key.tenant is not None and body.tenant != call.key.tenant:
        raise ApiError(403, "forbidden", "a tenant's key can only create keys for its tenant")
    if body.tenant is not None and call.runtime.config.tenant(body.tenant) is None:
        raise ApiError(422, "invalid", "no such tenant")
    record, token = await apikeys.create_key(
        call.store,
        call.runtime.keyspace,
        name=body.name,
        role=body.role,
        tenant=body.tenant,
        created_by=call.key.id,
    )
    call.audit_detail = {"key": record.id, "role": record.role.value, "scope": body.tenant or "*"}
    return json_response(KeyCreated(key=_key_view(record), token=token), 201)


async def revoke_key(call: Call) -> web.StreamResponse:
    key = await apikeys.get_key(call.store, call.runtime.keyspace, call.params["key_id"])
    if key is None:
        raise ApiError(404, "not_found", "no such key")
    if not call.may_see_tenant(key.tenant):
        raise ApiError(403, "forbidden", "this key belongs to another scope")
    revoked = await apikeys.revoke_key(call.store, call.runtime.keyspace, key.id)
    assert revoked is not None  # it existed a moment ago and keys are never deleted
    return json_response(_key_view(revoked))


# -- tenants ---------------------------------------------------------------------------------------
async def tenant_view(call: Call, tenant: TenantConfig) -> TenantView:
    plan = await call.quotas.plan_name(tenant.id)
    return TenantView(
        id=tenant.id,
        name=tenant.name,
        plan=plan,
        configured_plan=tenant.plan,
        default_persona=tenant.default_persona,
        channels=[ChannelView(kind=c.kind, id=c.name) for c in tenant.channels],
        notify_url=tenant.notify_url,
        limits=call.runtime.config.plans[plan],
    )


async def list_tenants(call: Call) -> web.StreamResponse:
    tenants = [t for t in call.runtime.config.tenants if call.may_see_tenant(t.id)]
    return json_response(TenantList(tenants=[await tenant_view(call, t) for t in tenants]))


async def get_tenant(call: Call) -> web.StreamResponse:
    return json_response(await tenant_view(call, call.tenant()))


async def set_plan(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    body: PlanChange = call.body
    if body.plan not in call.runtime.config.plans:
        raise ApiError(422, "invalid", "no such plan")
    call.audit_detail = {"plan": body.plan}
    await call.quotas.set_plan(tenant.id, body.plan)
    return json_response(await tenant_view(call, tenant))


async def get_quota(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    return json_response(await call.quotas.status(tenant.id))


async def get_usage(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    query: UsageQuery = call.query
    rows = await read_usage(
        call.store, call.runtime.keyspace, tenant=tenant.id, since=query.since, until=query.until
    )
    totals = {m: sum(getattr(r, m) for r in rows) for m in METRICS}
    return json_response(
        UsageReport(
            tenant=tenant.id, since=query.since, until=query.until, rows=rows, totals=totals
        )
    )


# -- conversations ---------------------------------------------------------------------------------
async def get_conversations(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    query: LimitQuery = call.query
    entries = await list_conversations(
        call.store, call.runtime.keyspace, tenant.id, limit=query.limit
    )
    return json_response(
        ConversationList(
            conversations=[
                ConversationSummary(
                    id=e.handle,
                    channel=e.conversation.channel.value,
                    conversation_id=e.conversation.conversation_id,
                    thread=e.conversation.thread,
                    persona=e.persona,
                    last_inbound_at=e.last_inbound_at,
                    updated_at=e.updated_at,
                )
                for e in entries
            ]
        )
    )


async def get_conversation(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    key = call.conversation_key()
    state = await read_state(call.store, call.runtime.keyspace, key)
    if state is None:
        raise ApiError(404, "not_found", "no such conversation")
    conv = state.conversation
    return json_response(
        ConversationView(
            id=conversation_handle(key),
            tenant=tenant.id,
            channel=conv.channel.value,
            conversation_id=conv.conversation_id,
            thread=conv.thread,
            persona=state.persona,
            persona_until=state.persona_until,
            last_inbound_at=state.last_inbound_at,
            history=list(state.history),
            facts=state.facts,
        )
    )


async def export(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    key = call.conversation_key()
    try:
        data = await export_conversation(
            call.store, call.runtime.keyspace, tenant.id, key, media=call.runtime.media
        )
    except BlobStoreError as exc:
        raise StoreError("the file store is out of reach") from exc
    if data is None:
        raise ApiError(404, "not_found", "no such conversation")
    response = json_response(ConversationExport.model_validate(data))
    response.headers["Content-Disposition"] = (
        f'attachment; filename="conversation-{conversation_handle(key)[:40]}.json"'
    )
    return response


async def erase(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    key = call.conversation_key()
    keyspace = call.runtime.keyspace
    entry = await read_index_entry(call.store, keyspace, tenant.id, key)
    state = await read_state(call.store, keyspace, key)
    if entry is None and state is None:
        raise ApiError(404, "not_found", "no such conversation")
    try:
        report = await erase_conversation(
            call.store,
            keyspace,
            tenant.id,
            key,
            desks=call.runtime.config.handoff_desks(),
            media=call.runtime.media,
        )
    except BlobStoreError as exc:
        # Nothing was erased yet (the files go first): 503, and the caller tries again.
        raise StoreError("the file store is out of reach") from exc
    call.audit_detail = report.model_dump()
    return json_response(EraseResult(erased=True, **report.model_dump()))


async def send_message(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    key = call.conversation_key()
    body: ProactiveMessage = call.body
    keyspace = call.runtime.keyspace
    entry = await read_index_entry(call.store, keyspace, tenant.id, key)
    if entry is None:
        raise ApiError(404, "not_found", "no such conversation")
    personas = call.runtime.personas
    name = body.persona or entry.persona or call.runtime.config.routing.default_persona
    if name not in personas:
        raise ApiError(422, "invalid", "no such persona")
    part = await _checked_part(body, entry.conversation, call)
    if not await call.quotas.reserve_outbound(tenant.id, 1):
        raise ApiError(429, "over_quota", "the tenant's monthly outbound quota is used up")
    message_id = new_id()
    message = OutboundMessage(
        id=message_id,
        conversation=entry.conversation,
        persona=personas[name].presentation,
        text=part.text,
        buttons=part.buttons,
        quick_replies=part.quick_replies,
        cards=part.cards,
        options=part.options,
        attachments=part.attachments,
        idempotency_key=f"proactive:{message_id}",
        reply_context=entry.reply_context,
    )
    try:
        await call.store.commit(
            Commit(
                appends=[
                    (keyspace.outbox(keyspace.partition(key)), message.model_dump_json().encode())
                ]
            )
        )
    except StoreError:
        await call.quotas.release_outbound(tenant.id, 1)
        raise
    await call.quotas.usage.record(
        tenant=tenant.id, channel=entry.conversation.channel.value, persona=name, outbound=1
    )
    call.audit_detail = {"message": message.id}
    return json_response(Accepted(id=message.id, idempotency_key=message.idempotency_key), 202)


async def _checked_part(
    body: ProactiveMessage, conversation: ConversationKey, call: Call
) -> ReplyPart:
    """The message's parts checked as a webhook bot's answer is (agents/webhook_answer.py):
    a file only by public https URL or by a blob this conversation holds."""
    answer = BotAnswer(
        parts=(
            BotPart(
                text=body.text,
                buttons=tuple(body.buttons),
                attachments=tuple(body.attachments),
                quick_replies=tuple(body.quick_replies),
                cards=tuple(body.cards),
                options=body.options,
            ),
        )
    )
    try:
        reply = await checked_reply(answer, conversation, call.runtime.media)
    except InvalidAnswer as exc:
        raise ApiError(422, "invalid", f"{exc} ({exc.reason})") from exc
    return reply.parts[0]


async def get_receipts(call: Call) -> web.StreamResponse:
    call.tenant()
    key = call.conversation_key()
    receipts = await read_receipts(call.store, call.runtime.keyspace, key)
    return json_response(ReceiptList(receipts=receipts))


# -- personas --------------------------------------------------------------------------------------
async def get_personas(call: Call) -> web.StreamResponse:
    return json_response(
        PersonaList(
            personas=[
                PersonaView(
                    name=p.name,
                    display_name=p.display_name,
                    description=p.description,
                    agent=p.agent.kind,
                    tools=list(p.tools),
                    prompts={n: t.version for n, t in p.prompts.items()},
                )
                for p in call.runtime.personas.values()
            ]
        )
    )


async def get_tools(call: Call) -> web.StreamResponse:
    persona = call.runtime.personas.get(call.params["persona"])
    if persona is None:
        raise ApiError(404, "not_found", "no such persona")
    return json_response(
        ToolList(persona=persona.name, tools=[ToolView(name=t) for t in persona.tools])
    )


async def reload(call: Call) -> web.StreamResponse:
    try:
        personas, version = await reload_personas(call.request.app)
    except ConfigError as exc:
        detail = "; ".join(f"{path}: {message}" for path, message in exc.problems)
        raise ApiError(422, "invalid_personas", detail[:2000], exc.problems[:100]) from exc
    call.audit_detail = {"version": version, "personas": len(personas)}
    return json_response(ReloadResult(personas=sorted(personas), version=version))


# -- dead letters ----------------------------------------------------------------------------------
async def get_dead_letters(call: Call) -> web.StreamResponse:
    query: DeadLetterQuery = call.query
    tenant = query.tenant
    if call.key.tenant is not None:
        if tenant is not None and tenant != call.key.tenant:
            raise ApiError(403, "forbidden", "this key is scoped to another tenant")
        tenant = call.key.tenant
    found = await list_dead_letters(
        call.store, call.runtime.keyspace, tenant=tenant, limit=query.limit
    )
    return json_response(
        DeadLetterList(
            dead_letters=[DeadLetterView(handle=h, letter=letter) for h, letter in found]
        )
    )


async def _letter(call: Call) -> DeadLetterView:
    handle = call.params["handle"]
    keyspace = call.runtime.keyspace
    if int(handle.split(":", 1)[0]) >= keyspace.partitions:
        raise ApiError(404, "not_found", "no such dead letter")
    letter = await get_dead_letter(call.store, keyspace, handle)
    # Another tenant's letter answers exactly like a missing one: a 403 would tell a scoped
    # caller that the handle exists.
    if letter is None or not call.may_see_tenant(letter.tenant):
        raise ApiError(404, "not_found", "no such dead letter")
    return DeadLetterView(handle=handle, letter=letter)


async def get_dead_letter_view(call: Call) -> web.StreamResponse:
    return json_response(await _letter(call))


async def replay_dead_letter(call: Call) -> web.StreamResponse:
    view = await _letter(call)
    call.audit_detail = {"tenant": view.letter.tenant or "", "kind": view.letter.kind}
    if not await replay(call.store, call.runtime.keyspace, view.handle):
        raise ApiError(409, "not_replayable", "this dead letter holds no message to replay")
    return json_response(ReplayResult(handle=view.handle, replayed=True))


async def discard_dead_letter(call: Call) -> web.StreamResponse:
    view = await _letter(call)
    await discard(call.store, call.runtime.keyspace, view.handle)
    return web.Response(status=204)


# -- audit and health ------------------------------------------------------------------------------
async def get_audit(call: Call) -> web.StreamResponse:
    query: AuditQuery = call.query
    tenant = query.tenant
    if call.key.tenant is not None:
        if tenant is not None and tenant != call.key.tenant:
            raise ApiError(403, "forbidden", "this key is scoped to another tenant")
        tenant = call.key.tenant
    events = await AuditLog(call.store, call.runtime.keyspace).read(
        tenant=tenant, after=query.after, limit=query.limit
    )
    return json_response(AuditList(events=[AuditItem(cursor=c, event=e) for c, e in events]))


async def health(call: Call) -> web.StreamResponse:
    body = await health_of(call.runtime)
    response = json_response(body, 200 if body.status == "ok" else 503)
    if body.store_error is not None:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def health_of(rt: Runtime) -> Health:
    """What ``/v1/health`` answers (the console's health page shows the same)."""
    assert rt.store is not None  # open while the app runs
    store_error: str | None = None
    version: int | None = None
    try:
        await rt.store.ping()
        version = await rt.store.incr(rt.keyspace.personas_version(), 0)
    except StoreError as exc:
        store_error = str(exc)[:500]
    consumers = [
        ConsumerHealth(role=c.role, running=c.running, partitions=c.owned_partitions)
        for c in rt.consumers
    ]
    healthy = store_error is None and all(c.running for c in consumers)
    return Health(
        status="ok" if healthy else "degraded",
        role=rt.role,
        store="ok" if store_error is None else "unreachable",
        store_error=store_error,
        consumers=consumers,
        connectors=sorted(c.value for c in rt.connectors),
        personas=len(rt.personas),
        personas_version=version,
    )
