"""``AdminClient``: the admin API (``/v1`` on the operations listener), typed.

Guarantee: each method makes one request to the route named in :data:`ADMIN_ROUTES` (method,
path, the status it expects) and returns the body parsed with the very pydantic model the
server writes it with (:mod:`gateway.admin.schemas`), so a field the server adds, drops or
retypes breaks here, not later in a caller. Any other status raises from
:mod:`gateway.client.errors`. ``tests/client/`` holds every route of the table to
``/v1/openapi.json`` (method, path, parameters, request and answer schemas) and every
operation there to a method, so the two cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import BaseModel, ValidationError

from gateway.admin.keys import Role
from gateway.admin.schemas import (
    Accepted,
    AuditList,
    ContactDefinition,
    ContactIdentityBody,
    ContactList,
    ContactView,
    ConversationExport,
    ConversationList,
    ConversationView,
    DeadLetterList,
    DeadLetterView,
    EraseResult,
    Health,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyView,
    PersonaDefinition,
    PersonaList,
    PersonaView,
    PlanChange,
    ProactiveMessage,
    QuotaView,
    ReceiptList,
    ReloadResult,
    ReplayResult,
    TenantDefinition,
    TenantList,
    TenantView,
    ToolList,
    UsageReport,
)
from gateway.client.errors import InvalidRequest
from gateway.client.transport import Answer, Route, Transport, error_of, parse
from gateway.models import Button

__all__ = ["ADMIN_ROUTES", "AdminClient"]

M = TypeVar("M", bound=BaseModel)


T = "/v1/tenants/{tenant}"
C = T + "/conversations/{conversation}"
K = T + "/contacts/{contact}"
# Keyed by the AdminClient method that calls each route.
ADMIN_ROUTES: Mapping[str, Route[Any]] = {
    "health": Route("GET", "/v1/health", Health, also=(503,)),
    "list_keys": Route("GET", "/v1/keys", KeyList),
    "create_key": Route("POST", "/v1/keys", KeyCreated, status=201, body=KeyCreate),
    "revoke_key": Route("DELETE", "/v1/keys/{key_id}", KeyView),
    "list_tenants": Route("GET", "/v1/tenants", TenantList),
    "get_tenant": Route("GET", T, TenantView),
    "put_tenant": Route("PUT", T, TenantView, body=TenantDefinition),
    "disable_tenant": Route("DELETE", T, None, status=204),
    "set_plan": Route("PUT", T + "/plan", TenantView, body=PlanChange),
    "get_quota": Route("GET", T + "/quota", QuotaView),
    "get_usage": Route("GET", T + "/usage", UsageReport),
    "list_conversations": Route("GET", T + "/conversations", ConversationList),
    "get_conversation": Route("GET", C, ConversationView),
    "export_conversation": Route("GET", C + "/export", ConversationExport),
    "erase_conversation": Route("DELETE", C, EraseResult),
    "send_message": Route("POST", C + "/messages", Accepted, status=202, body=ProactiveMessage),
    "list_receipts": Route("GET", C + "/receipts", ReceiptList),
    "list_contacts": Route("GET", T + "/contacts", ContactList),
    "get_contact": Route("GET", K, ContactView),
    "put_contact": Route("PUT", K, ContactView, body=ContactDefinition),
    "delete_contact": Route("DELETE", K, None, status=204),
    "link_contact_identity": Route(
        "POST", K + "/identities", ContactView, body=ContactIdentityBody
    ),
    "unlink_contact_identity": Route("DELETE", K + "/identities/{channel}/{identity}", ContactView),
    "list_personas": Route("GET", "/v1/personas", PersonaList),
    "list_persona_tools": Route("GET", "/v1/personas/{persona}/tools", ToolList),
    "reload_personas": Route("POST", "/v1/personas/reload", ReloadResult),
    "put_persona": Route("PUT", "/v1/personas/{persona}", PersonaView, body=PersonaDefinition),
    "disable_persona": Route("DELETE", "/v1/personas/{persona}", None, status=204),
    "list_dead_letters": Route("GET", "/v1/dead-letters", DeadLetterList),
    "get_dead_letter": Route("GET", "/v1/dead-letters/{handle}", DeadLetterView),
    "replay_dead_letter": Route("POST", "/v1/dead-letters/{handle}/replay", ReplayResult),
    "discard_dead_letter": Route("DELETE", "/v1/dead-letters/{handle}", None, status=204),
    "list_audit_events": Route("GET", "/v1/audit", AuditList),
}


def _query(**values: Any) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


def _body(model: type[M], **fields: Any) -> M:
    """The request body, checked here by the model the server parses it with; arguments it
    would refuse raise InvalidRequest (422, ``invalid_body``) before anything is sent."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise InvalidRequest(422, "invalid_body", str(exc)) from exc


class AdminClient(Transport):
    """The admin API with one bearer key (``flowbiz keys create``).

    ``base_url`` is the operations listener (``http://127.0.0.1:9090`` by default). Use it
    with ``async with``, or call :meth:`close`; pass ``session`` to share one of your own.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(base_url, session=session, timeout=timeout)
        self._auth = {"Authorization": f"Bearer {token}"}

    async def _answer(
        self,
        route: Route[Any],
        params: Mapping[str, str],
        query: Mapping[str, str] | None,
        body: BaseModel | None,
    ) -> Answer:
        path = route.path.format(**{k: quote(v, safe="") for k, v in params.items()})
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        headers = dict(self._auth)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = body.model_dump_json().encode()
        answer = await self.request(route.method, url, headers=headers, body=data)
        if answer.status != route.status and answer.status not in route.also:
            raise error_of(answer)
        return answer

    async def _call(
        self,
        route: Route[M],
        query: Mapping[str, str] | None = None,
        body: BaseModel | None = None,
        **params: str,
    ) -> M:
        return parse(route, await self._answer(route, params, query, body))

    # -- system ------------------------------------------------------------------------------
    async def health(self) -> Health:
        """Subsystem health; ``status == "degraded"`` (served as 503) is returned, not raised."""
        return await self._call(ADMIN_ROUTES["health"])

    async def list_audit_events(
        self, *, tenant: str | None = None, after: str | None = None, limit: int = 100
    ) -> AuditList:
        query = _query(tenant=tenant, after=after, limit=limit)
        return await self._call(ADMIN_ROUTES["list_audit_events"], query)

    # -- keys --------------------------------------------------------------------------------
    async def list_keys(self) -> KeyList:
        return await self._call(ADMIN_ROUTES["list_keys"])

    async def create_key(
        self, name: str, role: Role | str, *, tenant: str | None = None
    ) -> KeyCreated:
        """A new key; its token is in the answer only (``.token``)."""
        body = _body(KeyCreate, name=name, role=role, tenant=tenant)
        return await self._call(ADMIN_ROUTES["create_key"], body=body)

    async def revoke_key(self, key_id: str) -> KeyView:
        return await self._call(ADMIN_ROUTES["revoke_key"], key_id=key_id)

    # -- tenants -----------------------------------------------------------------------------
    async def list_tenants(self) -> TenantList:
        return await self._call(ADMIN_ROUTES["list_tenants"])

    async def get_tenant(self, tenant: str) -> TenantView:
        return await self._call(ADMIN_ROUTES["get_tenant"], tenant=tenant)

    async def put_tenant(
        self,
        tenant: str,
        *,
        name: str = "",
        plan: str = "free",
        default_persona: str | None = None,
        persona_switch: bool | None = None,
        channels: Sequence[Mapping[str, Any]] = (),
        notify_url: str | None = None,
        notify_secrets: Sequence[str] = (),
        notify_allow_private: bool = False,
        handoff: Mapping[str, Any] | None = None,
    ) -> TenantView:
        """Define the tenant (the keys of a gateway.yaml tenant block; secrets as
        ``env:NAME``), replace its definition or enable it again."""
        body = _body(
            TenantDefinition,
            name=name,
            plan=plan,
            default_persona=default_persona,
            persona_switch=persona_switch,
            channels=[dict(c) for c in channels],
            notify_url=notify_url,
            notify_secrets=list(notify_secrets),
            notify_allow_private=notify_allow_private,
            handoff=None if handoff is None else dict(handoff),
        )
        return await self._call(ADMIN_ROUTES["put_tenant"], body=body, tenant=tenant)

    async def disable_tenant(self, tenant: str) -> None:
        await self._answer(ADMIN_ROUTES["disable_tenant"], {"tenant": tenant}, None, None)

    async def set_plan(self, tenant: str, plan: str) -> TenantView:
        body = _body(PlanChange, plan=plan)
        return await self._call(ADMIN_ROUTES["set_plan"], body=body, tenant=tenant)

    async def get_quota(self, tenant: str) -> QuotaView:
        return await self._call(ADMIN_ROUTES["get_quota"], tenant=tenant)

    async def get_usage(
        self, tenant: str, *, since: str | None = None, until: str | None = None
    ) -> UsageReport:
        """Usage per day, channel and persona; ``since``/``until`` are ``YYYY-MM-DD``."""
        query = _query(since=since, until=until)
        return await self._call(ADMIN_ROUTES["get_usage"], query, tenant=tenant)

    # -- conversations (``conversation`` is the handle the lists give as ``id``) ---------------
    async def list_conversations(self, tenant: str, *, limit: int = 100) -> ConversationList:
        query = _query(limit=limit)
        return await self._call(ADMIN_ROUTES["list_conversations"], query, tenant=tenant)

    async def get_conversation(self, tenant: str, conversation: str) -> ConversationView:
        route = ADMIN_ROUTES["get_conversation"]
        return await self._call(route, tenant=tenant, conversation=conversation)

    async def export_conversation(self, tenant: str, conversation: str) -> ConversationExport:
        route = ADMIN_ROUTES["export_conversation"]
        return await self._call(route, tenant=tenant, conversation=conversation)

    async def erase_conversation(self, tenant: str, conversation: str) -> EraseResult:
        route = ADMIN_ROUTES["erase_conversation"]
        return await self._call(route, tenant=tenant, conversation=conversation)

    async def send_message(
        self,
        tenant: str,
        conversation: str,
        text: str,
        *,
        persona: str | None = None,
        buttons: Sequence[Button] = (),
        quick_replies: Sequence[Button] = (),
        cards: Sequence[Mapping[str, Any]] = (),
        options: Mapping[str, Any] | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
    ) -> Accepted:
        """A proactive message on the conversation's channel; queued, delivered later. Cards,
        options and attachments as JSON objects (docs/admin-api.md): a file by public https
        URL or by the id of a blob this conversation holds."""
        body = _body(
            ProactiveMessage,
            text=text,
            persona=persona,
            buttons=list(buttons),
            quick_replies=list(quick_replies),
            cards=list(cards),
            options=options,
            attachments=list(attachments),
        )
        route = ADMIN_ROUTES["send_message"]
        return await self._call(route, body=body, tenant=tenant, conversation=conversation)

    async def list_receipts(self, tenant: str, conversation: str) -> ReceiptList:
        route = ADMIN_ROUTES["list_receipts"]
        return await self._call(route, tenant=tenant, conversation=conversation)

    # -- contacts: one person's identities across the tenant's channels -----------------------
    async def list_contacts(
        self, tenant: str, *, limit: int = 100, after: str | None = None
    ) -> ContactList:
        """A page of contacts by id; pass the answer's ``next`` as ``after`` for the next."""
        query = _query(limit=limit, after=after)
        return await self._call(ADMIN_ROUTES["list_contacts"], query, tenant=tenant)

    async def get_contact(self, tenant: str, contact: str) -> ContactView:
        return await self._call(ADMIN_ROUTES["get_contact"], tenant=tenant, contact=contact)

    async def put_contact(
        self, tenant: str, contact: str, *, name: str | None = None, emails: Sequence[str] = ()
    ) -> ContactView:
        """Define the contact, or replace its name and emails (its identities stay)."""
        body = _body(ContactDefinition, name=name, emails=list(emails))
        route = ADMIN_ROUTES["put_contact"]
        return await self._call(route, body=body, tenant=tenant, contact=contact)

    async def delete_contact(self, tenant: str, contact: str) -> None:
        route = ADMIN_ROUTES["delete_contact"]
        await self._answer(route, {"tenant": tenant, "contact": contact}, None, None)

    async def link_contact_identity(
        self, tenant: str, contact: str, channel: str, identity: str
    ) -> ContactView:
        """Link the sender id ``identity`` on ``channel`` (``slack``, ``line``…)."""
        body = _body(ContactIdentityBody, channel=channel, identity=identity)
        route = ADMIN_ROUTES["link_contact_identity"]
        return await self._call(route, body=body, tenant=tenant, contact=contact)

    async def unlink_contact_identity(
        self, tenant: str, contact: str, channel: str, identity: str
    ) -> ContactView:
        route = ADMIN_ROUTES["unlink_contact_identity"]
        return await self._call(
            route, tenant=tenant, contact=contact, channel=channel, identity=identity
        )

    # -- personas ----------------------------------------------------------------------------
    async def list_personas(self) -> PersonaList:
        return await self._call(ADMIN_ROUTES["list_personas"])

    async def list_persona_tools(self, persona: str) -> ToolList:
        return await self._call(ADMIN_ROUTES["list_persona_tools"], persona=persona)

    async def reload_personas(self) -> ReloadResult:
        return await self._call(ADMIN_ROUTES["reload_personas"])

    async def put_persona(
        self,
        persona: str,
        *,
        display_name: str,
        description: str = "",
        signature: str = "",
        icon_url: str | None = None,
        prompts: Mapping[str, Mapping[str, Any]] | None = None,
        tools: Sequence[str] = (),
        agent: Mapping[str, Any] | None = None,
        welcome: str | None = None,
        failure_reply: str | None = None,
        refusal: str | None = None,
        access: Mapping[str, Any] | None = None,
    ) -> PersonaView:
        """Define the persona (the keys of a persona file), replace its definition or enable
        it again; no host tools, ``stdio`` MCP servers or ``knowledge_dir`` (422)."""
        given = {
            "prompts": prompts,
            "agent": agent,
            "welcome": welcome,
            "failure_reply": failure_reply,
            "refusal": refusal,
            "access": access,
        }
        definition: dict[str, Any] = {
            "display_name": display_name,
            "description": description,
            "signature": signature,
            "icon_url": icon_url,
            "tools": list(tools),
            **{key: value for key, value in given.items() if value is not None},
        }
        try:  # checked as the server parses it, from the JSON this sends
            body = PersonaDefinition.model_validate_json(json.dumps(definition))
        except (ValidationError, TypeError) as exc:
            raise InvalidRequest(422, "invalid_body", str(exc)) from exc
        return await self._call(ADMIN_ROUTES["put_persona"], body=body, persona=persona)

    async def disable_persona(self, persona: str) -> None:
        await self._answer(ADMIN_ROUTES["disable_persona"], {"persona": persona}, None, None)

    # -- dead letters ------------------------------------------------------------------------
    async def list_dead_letters(
        self, *, tenant: str | None = None, limit: int = 100
    ) -> DeadLetterList:
        query = _query(tenant=tenant, limit=limit)
        return await self._call(ADMIN_ROUTES["list_dead_letters"], query)

    async def get_dead_letter(self, handle: str) -> DeadLetterView:
        return await self._call(ADMIN_ROUTES["get_dead_letter"], handle=handle)

    async def replay_dead_letter(self, handle: str) -> ReplayResult:
        return await self._call(ADMIN_ROUTES["replay_dead_letter"], handle=handle)

    async def discard_dead_letter(self, handle: str) -> None:
        await self._answer(ADMIN_ROUTES["discard_dead_letter"], {"handle": handle}, None, None)
