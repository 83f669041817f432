"""The admin API: every route declared once as an :class:`Operation`.

The same table mounts the aiohttp routes and writes ``/v1/openapi.json``
(:mod:`gateway.admin.openapi`), so the document cannot drift from what is served.

Every request passes one gate, in this order:

1. **401** — no ``Authorization: Bearer <token>``, or a token that is malformed, unknown or
   revoked (``WWW-Authenticate: Bearer``);
2. **403** — the key's role is below the operation's, or a tenant-scoped key reaches for a
   global operation or another tenant;
3. **404** — a path parameter that cannot name anything (bad format, unknown tenant);
4. **400 / 422** — an unreadable query or body (a malformed ``after=`` cursor included) /
   a body that breaks the schema.

Whatever the step, a store that cannot be reached answers **503** ``store_unavailable``
with ``Retry-After`` (one mapping, in :func:`_store_unavailable`), never a 500; ``/v1/health``
then answers ``degraded``.

Mutating operations write an audit event (who, what, when, from where, status) whatever
their outcome once the caller is authenticated.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.admin import keys as apikeys
from gateway.admin.keys import ApiKey, Role
from gateway.admin.personas import reload_personas
from gateway.admin.schemas import (
    DEAD_LETTER_PATTERN,
    HANDLE_PATTERN,
    PERSONA_PATTERN,
    TENANT_PATTERN,
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
    ErrorBody,
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
    QuotaView,
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
from gateway.audit import AuditEvent, AuditLog, digest
from gateway.config import TenantConfig
from gateway.conversations import (
    conversation_handle,
    erase_conversation,
    export_conversation,
    list_conversations,
    parse_handle,
    read_index_entry,
    read_receipts,
    read_state,
)
from gateway.deadletters import discard, get_dead_letter, list_dead_letters, replay
from gateway.errors import ConfigError, CursorError, StoreError
from gateway.models import OutboundMessage, new_id
from gateway.observability import get_logger
from gateway.quotas import QuotaPolicy
from gateway.runtime import RUNTIME, Runtime
from gateway.store import Commit, Store
from gateway.usage import METRICS, read_usage

__all__ = [
    "OPERATIONS",
    "RETRY_AFTER_SECONDS",
    "ApiError",
    "Operation",
    "health_of",
    "mount_admin",
    "permits",
]

log = get_logger(__name__)

# What a client is told to wait when the store is unreachable: long enough not to hammer a
# recovering store, short enough that a brief failover is not noticed for long.
RETRY_AFTER_SECONDS = 5

Scope = Literal["global", "tenant", "any"]
PATH_PATTERNS: Mapping[str, str] = {
    "tenant": TENANT_PATTERN,
    "conversation": HANDLE_PATTERN,
    "handle": DEAD_LETTER_PATTERN,
    "key_id": apikeys.KEY_ID_PATTERN,
    "persona": PERSONA_PATTERN,
}


class ApiError(Exception):
    """Ends a request with a JSON error body."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


@dataclass(slots=True)
class Call:
    """What a handler gets: the request, the runtime, the caller and the parsed inputs."""

    request: web.Request
    runtime: Runtime
    key: ApiKey
    params: dict[str, str]
    query: Any = None
    body: Any = None
    audit_detail: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        assert self.runtime.store is not None  # open while the app runs
        return self.runtime.store

    @property
    def quotas(self) -> QuotaPolicy:
        assert self.runtime.quotas is not None  # built with the store
        return self.runtime.quotas

    def tenant(self) -> TenantConfig:
        tenant = self.runtime.config.tenant(self.params["tenant"])
        if tenant is None:
            raise ApiError(404, "not_found", "no such tenant")
        return tenant

    def conversation_key(self) -> str:
        key = parse_handle(self.params["conversation"])
        if key is None or not key.startswith(self.params["tenant"] + "/"):
            raise ApiError(404, "not_found", "no such conversation")
        return key

    def may_see_tenant(self, tenant: str | None) -> bool:
        return self.key.tenant is None or self.key.tenant == tenant


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    role: Role
    scope: Scope
    handler: Handler
    response: type[BaseModel] | None
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    mutating: bool = False
    tag: str = "admin"
    redact: tuple[str, ...] = ()  # path parameters written to the audit log as digests

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=model.model_dump_json().encode(), content_type="application/json"
    )


def _error(status: int, error: str, message: str) -> web.Response:
    response = _json(ErrorBody(error=error, message=message), status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="flowbiz-admin"'
    return response


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
    return _json(KeyList(keys=[_key_view(k) for k in found]))


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
    return _json(KeyCreated(key=_key_view(record), token=token), 201)


async def revoke_key(call: Call) -> web.StreamResponse:
    key = await apikeys.get_key(call.store, call.runtime.keyspace, call.params["key_id"])
    if key is None:
        raise ApiError(404, "not_found", "no such key")
    if not call.may_see_tenant(key.tenant):
        raise ApiError(403, "forbidden", "this key belongs to another scope")
    revoked = await apikeys.revoke_key(call.store, call.runtime.keyspace, key.id)
    assert revoked is not None  # it existed a moment ago and keys are never deleted
    return _json(_key_view(revoked))


# -- tenants ---------------------------------------------------------------------------------------
async def _tenant_view(call: Call, tenant: TenantConfig) -> TenantView:
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
    return _json(TenantList(tenants=[await _tenant_view(call, t) for t in tenants]))


async def get_tenant(call: Call) -> web.StreamResponse:
    return _json(await _tenant_view(call, call.tenant()))


async def set_plan(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    body: PlanChange = call.body
    if body.plan not in call.runtime.config.plans:
        raise ApiError(422, "invalid", "no such plan")
    call.audit_detail = {"plan": body.plan}
    await call.quotas.set_plan(tenant.id, body.plan)
    return _json(await _tenant_view(call, tenant))


async def get_quota(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    return _json(await call.quotas.status(tenant.id))


async def get_usage(call: Call) -> web.StreamResponse:
    tenant = call.tenant()
    query: UsageQuery = call.query
    rows = await read_usage(
        call.store, call.runtime.keyspace, tenant=tenant.id, since=query.since, until=query.until
    )
    totals = {m: sum(getattr(r, m) for r in rows) for m in METRICS}
    return _json(
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
    return _json(
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
    return _json(
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
    data = await export_conversation(call.store, call.runtime.keyspace, tenant.id, key)
    if data is None:
        raise ApiError(404, "not_found", "no such conversation")
    response = _json(ConversationExport.model_validate(data))
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
    report = await erase_conversation(call.store, keyspace, tenant.id, key)
    call.audit_detail = report.model_dump()
    return _json(EraseResult(erased=True, **report.model_dump()))


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
    if not await call.quotas.reserve_outbound(tenant.id, 1):
        raise ApiError(429, "over_quota", "the tenant's monthly outbound quota is used up")
    message_id = new_id()
    message = OutboundMessage(
        id=message_id,
        conversation=entry.conversation,
        persona=personas[name].presentation,
        text=body.text,
        buttons=tuple(body.buttons),
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
    return _json(Accepted(id=message.id, idempotency_key=message.idempotency_key), 202)


async def get_receipts(call: Call) -> web.StreamResponse:
    call.tenant()
    key = call.conversation_key()
    receipts = await read_receipts(call.store, call.runtime.keyspace, key)
    return _json(ReceiptList(receipts=receipts))


# -- personas --------------------------------------------------------------------------------------
async def get_personas(call: Call) -> web.StreamResponse:
    return _json(
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
    return _json(ToolList(persona=persona.name, tools=[ToolView(name=t) for t in persona.tools]))


async def reload(call: Call) -> web.StreamResponse:
    try:
        personas, version = await reload_personas(call.request.app)
    except ConfigError as exc:
        detail = "; ".join(f"{path}: {message}" for path, message in exc.problems)
        raise ApiError(422, "invalid_personas", detail[:2000]) from exc
    call.audit_detail = {"version": version, "personas": len(personas)}
    return _json(ReloadResult(personas=sorted(personas), version=version))


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
    return _json(
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
    return _json(await _letter(call))


async def replay_dead_letter(call: Call) -> web.StreamResponse:
    view = await _letter(call)
    call.audit_detail = {"tenant": view.letter.tenant or "", "kind": view.letter.kind}
    if not await replay(call.store, call.runtime.keyspace, view.handle):
        raise ApiError(409, "not_replayable", "this dead letter holds no message to replay")
    return _json(ReplayResult(handle=view.handle, replayed=True))


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
    return _json(AuditList(events=[AuditItem(cursor=c, event=e) for c, e in events]))


async def health(call: Call) -> web.StreamResponse:
    body = await health_of(call.runtime)
    response = _json(body, 200 if body.status == "ok" else 503)
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


# -- the table -------------------------------------------------------------------------------------
T = "/v1/tenants/{tenant}"
C = T + "/conversations/{conversation}"
V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/v1/health", "getHealth", "Subsystem health", V, "any", health, Health,
              errors=(503,), tag="system"),
    Operation("GET", "/v1/keys", "listKeys", "List API keys (never their tokens)", A, "any",
              list_keys, KeyList, tag="keys"),
    Operation("POST", "/v1/keys", "createKey", "Create an API key; the token is shown once",
              A, "any", create_key, KeyCreated, status=201, body=KeyCreate, errors=(400, 422),
              mutating=True, tag="keys"),
    Operation("DELETE", "/v1/keys/{key_id}", "revokeKey", "Revoke an API key", A, "any",
              revoke_key, KeyView, errors=(404,), mutating=True, tag="keys"),
    Operation("GET", "/v1/tenants", "listTenants", "List tenants", V, "any", list_tenants,
              TenantList, tag="tenants"),
    Operation("GET", T, "getTenant", "Read a tenant", V, "tenant", get_tenant, TenantView,
              errors=(404,), tag="tenants"),
    Operation("PUT", T + "/plan", "setTenantPlan", "Change a tenant's plan", A, "global",
              set_plan, TenantView, body=PlanChange, errors=(400, 404, 422), mutating=True,
              tag="tenants"),
    Operation("GET", T + "/quota", "getTenantQuota", "Quota status in the current window", V,
              "tenant", get_quota, QuotaView, errors=(404,), tag="tenants"),
    Operation("GET", T + "/usage", "getTenantUsage", "Usage per day, channel and persona", V,
              "tenant", get_usage, UsageReport, query=UsageQuery, errors=(400, 404),
              tag="tenants"),
    Operation("GET", T + "/conversations", "listConversations", "List conversations", V,
              "tenant", get_conversations, ConversationList, query=LimitQuery,
              errors=(400, 404), tag="conversations"),
    Operation("GET", C, "getConversation", "Read a conversation's state and history", OP,
              "tenant", get_conversation, ConversationView, errors=(404,),
              tag="conversations"),
    Operation("GET", C + "/export", "exportConversation", "Export a conversation as JSON", OP,
              "tenant", export, ConversationExport, errors=(404,), tag="conversations"),
    Operation("DELETE", C, "eraseConversation",
              "Erase a conversation everywhere in the store (GDPR)", A, "tenant", erase,
              EraseResult, errors=(404,), mutating=True, tag="conversations",
              redact=("conversation",)),
    Operation("POST", C + "/messages", "sendMessage", "Send a proactive message", OP, "tenant",
              send_message, Accepted, status=202, body=ProactiveMessage,
              errors=(400, 404, 422, 429), mutating=True, tag="conversations",
              redact=("conversation",)),
    Operation("GET", C + "/receipts", "listReceipts", "Delivery receipts of a conversation", V,
              "tenant", get_receipts, ReceiptList, errors=(404,), tag="conversations"),
    Operation("GET", "/v1/personas", "listPersonas", "List personas", V, "any", get_personas,
              PersonaList, tag="personas"),
    Operation("GET", "/v1/personas/{persona}/tools", "listPersonaTools",
              "Tools available to a persona", V, "any", get_tools, ToolList, errors=(404,),
              tag="personas"),
    Operation("POST", "/v1/personas/reload", "reloadPersonas",
              "Reload personas from disk in every process", A, "global", reload,
              ReloadResult, errors=(422,), mutating=True, tag="personas"),
    Operation("GET", "/v1/dead-letters", "listDeadLetters", "List dead letters", V, "any",
              get_dead_letters, DeadLetterList, query=DeadLetterQuery, errors=(400,),
              tag="dead-letters"),
    Operation("GET", "/v1/dead-letters/{handle}", "getDeadLetter", "Inspect a dead letter", OP,
              "any", get_dead_letter_view, DeadLetterView, errors=(404,), tag="dead-letters"),
    Operation("POST", "/v1/dead-letters/{handle}/replay", "replayDeadLetter",
              "Put a dead letter back in its queue", OP, "any", replay_dead_letter,
              ReplayResult, errors=(404, 409), mutating=True, tag="dead-letters"),
    Operation("DELETE", "/v1/dead-letters/{handle}", "discardDeadLetter",
              "Discard a dead letter", OP, "any", discard_dead_letter, None, status=204,
              errors=(404,), mutating=True, tag="dead-letters"),
    Operation("GET", "/v1/audit", "listAuditEvents", "Read the audit log", A, "any", get_audit,
              AuditList, query=AuditQuery, errors=(400,), tag="system"),
)  # fmt: skip
_BY_ID: Mapping[str, Operation] = {op.operation_id: op for op in OPERATIONS}


# -- the gate --------------------------------------------------------------------------------------
async def _authenticate(request: web.Request, rt: Runtime) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "send Authorization: Bearer <API key>")
    assert rt.store is not None  # open while the app runs
    key = await apikeys.authenticate(rt.store, rt.keyspace, token.strip())
    if key is None:
        raise ApiError(401, "unauthenticated", "unknown or revoked API key")
    return key


def _authorize(op: Operation, key: ApiKey, params: Mapping[str, str]) -> None:
    if not key.role.covers(op.role):
        raise ApiError(403, "forbidden", f"this operation needs the {op.role.value} role")
    if key.tenant is None:
        return
    if op.scope == "global":
        raise ApiError(403, "forbidden", "this operation needs a global key")
    if op.scope == "tenant" and params.get("tenant") != key.tenant:
        raise ApiError(403, "forbidden", "this key is scoped to another tenant")


def permits(key: ApiKey, operation_id: str, tenant: str | None = None) -> bool:
    """The gate's decision (role and scope) for ``key`` on an operation, about ``tenant``.

    The console asks this before every page and action, so it grants exactly what the API
    grants. A tenant-scoped key never reaches another tenant, whatever the operation's scope
    (the API's handlers filter "any"-scope lists and letters the same way).
    """
    op = _BY_ID[operation_id]
    try:
        _authorize(op, key, {} if tenant is None else {"tenant": tenant})
    except ApiError:
        return False
    return key.tenant is None or tenant is None or key.tenant == tenant


def _parse_query(op: Operation, request: web.Request) -> Any:
    if op.query is None:
        return None
    raw = {name: request.query.getone(name) for name in request.query}
    try:
        return op.query.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(400, "bad_query", _first_problem(exc)) from exc


async def _parse_body(op: Operation, request: web.Request) -> Any:
    if op.body is None:
        return None
    raw = await request.read()
    try:
        return op.body.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ApiError(400, "bad_json", "the body is not valid JSON") from exc
        raise ApiError(422, "invalid", _first_problem(exc)) from exc


def _first_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:500]


def _endpoint(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        rt = request.app[RUNTIME]
        params = dict(request.match_info)
        call: Call | None = None
        try:
            key = await _authenticate(request, rt)
            call = Call(request=request, runtime=rt, key=key, params=params)
            _authorize(op, key, params)
            for name, value in params.items():
                if re.fullmatch(PATH_PATTERNS[name].strip("^$"), value) is None:
                    raise ApiError(404, "not_found", f"no such {name.replace('_', ' ')}")
            call.query = _parse_query(op, request)
            call.body = await _parse_body(op, request)
            response = await op.handler(call)
        except ApiError as exc:
            response = _error(exc.status, exc.error, exc.message)
        except CursorError as exc:
            _count(rt, op, exc.reason)
            response = _error(exc.status, exc.reason, str(exc))
        except StoreError as exc:
            response = _store_unavailable(op, rt, exc)
        if op.mutating and call is not None:
            try:
                await _audit(op, call, response.status)
            except StoreError as exc:
                # An action the audit log cannot record is not reported as done.
                response = _store_unavailable(op, rt, exc)
        return response

    return handle


def _count(rt: Runtime, op: Operation, error: str) -> None:
    rt.metrics.admin_errors.labels(op.operation_id, error).inc()


def _store_unavailable(op: Operation, rt: Runtime, exc: StoreError) -> web.Response:
    """Every StoreError of every route ends here: 503 with ``Retry-After``, never a 500.

    ``/v1/health`` answers its own body, ``degraded``, even though the caller could not be
    authenticated (the keys live in the store): only the outage itself, no internals.
    """
    _count(rt, op, "store_unavailable")
    log.warning("admin.store_unavailable", operation=op.operation_id, error=type(exc).__name__)
    if op.handler is health:
        response = _json(
            Health(
                status="degraded",
                role=rt.role,
                store="unreachable",
                store_error=None,
                consumers=None,
                connectors=None,
                personas=None,
                personas_version=None,
            ),
            503,
        )
    else:
        response = _error(503, "store_unavailable", "the store is unavailable; retry later")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def _audit(op: Operation, call: Call, status: int) -> None:
    assert call.runtime.store is not None
    target = {
        name: digest(value) if name in op.redact else value for name, value in call.params.items()
    }
    await AuditLog(call.runtime.store, call.runtime.keyspace).write(
        AuditEvent(
            actor=call.key.id,
            actor_name=call.key.name,
            role=call.key.role.value,
            action=op.operation_id,
            tenant=call.params.get("tenant") or call.key.tenant,
            target=target,
            remote=call.request.remote,
            status=status,
            detail=call.audit_detail,
        )
    )


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Router errors (404, 405) under the admin prefix answer in the API's JSON shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        path = request.path
        if not path.startswith("/v1/") or path.startswith("/v1/channels/") or exc.status < 400:
            raise
        response = _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


def mount_admin(app: web.Application) -> None:
    """Add the admin routes, ``/v1/openapi.json`` and the JSON error middleware."""
    from gateway.admin.openapi import openapi_handler

    app.middlewares.append(_json_errors)
    app.router.add_get("/v1/openapi.json", openapi_handler, name="admin.openapi")
    for op in OPERATIONS:
        app.router.add_route(op.method, op.path, _endpoint(op), name=f"admin.{op.operation_id}")
