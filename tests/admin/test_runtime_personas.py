"""Personas defined and disabled through the admin API, picked up by every process.

Two gateways share one Redis: the first serves the admin API and no worker (role ``web``),
so what it stores is answered by the second's worker once the second has polled; a third
started afterwards serves what is stored from the start.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway import persona_sync
from gateway.admin.keys import Role, create_key
from gateway.audit import AuditLog
from gateway.persona_overlay import overlay_document
from tests.harness import SECRETS, RunningGateway, base_config, http_tenant, running_gateway

pytestmark = pytest.mark.redis

STORED_REPLY = "Hello from the core stored through the API."
LLM = {"base_url": "https://llm.attacker.example/v1", "model": "m"}
WEBHOOK = {"url": "https://bot.attacker.example/hook", "secrets_env": ["T_SIGN"]}


def _persona(display_name: str = "Stored Core", **overrides: Any) -> dict[str, Any]:
    return {
        "display_name": display_name,
        "prompts": {"system": {"versions": {"1": "A secret system prompt text."}}},
        "agent": {
            "kind": "rules",
            "options": {"rules": [{"keywords": ["hello"], "reply": STORED_REPLY}]},
        },
        **overrides,
    }


@dataclass
class Pair:
    first: RunningGateway
    second: RunningGateway
    session: aiohttp.ClientSession
    admin: dict[str, str]
    data: dict[str, Any]

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        gw: RunningGateway | None = None,
    ) -> tuple[int, Any]:
        url = (gw or self.first).ops_url + path
        async with self.session.request(
            method, url, json=body, headers=headers or self.admin
        ) as response:
            text = await response.text()
            return response.status, (await response.json()) if text else None

    async def send(self, gw: RunningGateway, text: str, conversation: str) -> int:
        client = HttpChannelClient(
            session=self.session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        status, _ = await client.send(conversation_id=conversation, text=text)
        return status

    async def names(self, gw: RunningGateway) -> list[str]:
        status, body = await self.call("GET", "/v1/personas", gw=gw)
        assert status == 200, body
        return [p["name"] for p in body["personas"]]

    async def stored_version(self) -> int:
        rt = self.first.runtime
        assert rt.store is not None
        _, version = await overlay_document(rt.keyspace).read(rt.store)
        return version


async def _key(gw: RunningGateway, role: Role, tenant: str | None = None) -> dict[str, str]:
    rt = gw.runtime
    assert rt.store is not None
    _, token = await create_key(rt.store, rt.keyspace, name=role.value, role=role, tenant=tenant)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def pair(redis_url: str, receiver: CallbackReceiver) -> AsyncIterator[Pair]:
    tenant = {**http_tenant(receiver.url), "default_persona": "core"}
    data = base_config(redis_url, tenants=[tenant])
    # A server the gateway would run as a process on the host: never grantable by the API.
    data["mcp_servers"] = {"shell": {"transport": "stdio", "command": sys.executable}}
    async with (
        running_gateway(data, role="web") as first,
        running_gateway(data) as second,
        aiohttp.ClientSession() as session,
    ):
        yield Pair(first, second, session, await _key(first, Role.ADMIN), data)


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


async def test_a_persona_put_on_one_process_answers_on_the_other(
    pair: Pair, receiver: CallbackReceiver
) -> None:
    status, body = await pair.call("PUT", "/v1/personas/core", body=_persona())
    assert status == 200, body
    assert (body["name"], body["display_name"], body["agent"]) == ("core", "Stored Core", "rules")
    assert pair.first.runtime.personas["core"].display_name == "Stored Core"  # before the answer

    async def second_has_it() -> bool:
        worker = pair.second.runtime.worker
        assert worker is not None
        return worker.personas["core"].display_name == "Stored Core"

    await _until(second_has_it)
    # The first has no worker: the second's answers, with the stored definition.
    assert await pair.send(pair.second, "hello there", "c-second") == 202
    [reply] = await receiver.wait_for(1)
    assert reply.payload["text"] == STORED_REPLY
    assert reply.payload["persona"]["display_name"] == "Stored Core"

    # A file reload loads the files again and keeps the stored persona over them, here and
    # in the other process (which reloads on the counter the reload bumps).
    status, body = await pair.call("POST", "/v1/personas/reload")
    assert status == 200, body
    assert pair.first.runtime.personas["core"].display_name == "Stored Core"
    seen = pair.second.runtime.persona_sync.seen

    async def second_reloaded() -> bool:
        return pair.second.runtime.persona_sync.seen != seen

    await _until(second_reloaded)
    worker = pair.second.runtime.worker
    assert worker is not None
    assert worker.personas["core"].display_name == "Stored Core"

    # A process started now serves the stored persona from its start.
    async with running_gateway(pair.data) as third:
        assert third.runtime.worker is not None
        assert third.runtime.worker.personas["core"].display_name == "Stored Core"
        assert await pair.names(third) == ["core", "docs", "infra"]


async def test_a_persona_is_created_disabled_and_enabled_again_everywhere(pair: Pair) -> None:
    status, body = await pair.call("PUT", "/v1/personas/sales", body=_persona("Sales"))
    assert status == 200, body
    assert await pair.names(pair.first) == ["core", "docs", "infra", "sales"]

    async def second_lists(expected: list[str]) -> bool:
        return await pair.names(pair.second) == expected

    await _until(lambda: second_lists(["core", "docs", "infra", "sales"]))

    for name in ("sales", "docs"):  # a stored persona and a file's, neither needed
        status, _ = await pair.call("DELETE", f"/v1/personas/{name}")
        assert status == 204
    assert await pair.names(pair.first) == ["core", "infra"]
    await _until(lambda: second_lists(["core", "infra"]))
    status, _ = await pair.call("DELETE", "/v1/personas/docs")
    assert status == 404  # disabled already
    status, _ = await pair.call("GET", "/v1/personas/docs/tools")
    assert status == 404

    status, body = await pair.call("PUT", "/v1/personas/sales", body=_persona("Sales Again"))
    assert status == 200, body
    assert await pair.names(pair.first) == ["core", "infra", "sales"]

    rt = pair.first.runtime
    assert rt.store is not None
    events = [e for _, e in await AuditLog(rt.store, rt.keyspace).read(limit=50)]
    persona_events = [e for e in events if e.action in ("putPersona", "disablePersona")]
    assert [(e.action, e.status, e.detail.get("change")) for e in persona_events] == [
        ("putPersona", 200, "created"),
        ("disablePersona", 204, "disabled"),
        ("disablePersona", 204, "disabled"),
        ("disablePersona", 404, None),
        ("putPersona", 200, "enabled"),
    ]
    created = persona_events[0]
    assert created.target == {"persona": "sales"}
    assert created.detail["agent"] == "rules"
    assert created.detail["tools"] == []
    assert "prompts" in created.detail["fields"]
    # The prompt's text never reaches the audit log, nor do the rules' replies.
    assert all("secret system prompt" not in str(e.detail) for e in persona_events)
    assert all(STORED_REPLY not in str(e.detail) for e in persona_events)


async def test_the_audit_names_the_keys_a_replacement_changed(pair: Pair) -> None:
    status, _ = await pair.call("PUT", "/v1/personas/sales", body=_persona("Sales"))
    assert status == 200
    status, _ = await pair.call(
        "PUT", "/v1/personas/sales", body=_persona("Sales", signature="— Sales")
    )
    assert status == 200
    rt = pair.first.runtime
    assert rt.store is not None
    events = [e for _, e in await AuditLog(rt.store, rt.keyspace).read(limit=50)]
    last = [e for e in events if e.action == "putPersona"][-1]
    assert (last.detail["change"], last.detail["fields"]) == ("replaced", ["signature"])


async def test_a_tenant_naming_a_stored_persona_is_served_once_the_persona_arrives(
    redis_url: str, receiver: CallbackReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tenants' poll of a process may come before its personas' poll: the tenant that
    names a persona stored just before it is not lost, it is applied at a later poll."""
    monkeypatch.setattr(persona_sync, "POLL_SECONDS", 3.0)  # tenants (1 s) always poll first
    data = base_config(redis_url, tenants=[http_tenant(receiver.url)])
    async with (
        running_gateway(data, role="web") as first,
        running_gateway(data) as second,
        aiohttp.ClientSession() as session,
    ):
        pair = Pair(first, second, session, await _key(first, Role.ADMIN), data)
        status, body = await pair.call("PUT", "/v1/personas/sales", body=_persona("Sales"))
        assert status == 200, body
        beta = {**http_tenant(receiver.url, "beta"), "default_persona": "sales"}
        status, body = await pair.call("PUT", "/v1/tenants/beta", body=beta)
        assert status == 200, body

        async def second_serves_beta() -> bool:
            worker = second.runtime.worker
            assert worker is not None
            return second.runtime.config.tenant("beta") is not None and "sales" in worker.personas

        await _until(second_serves_beta, timeout=10.0)
        client = HttpChannelClient(
            session=session, base_url=second.url, tenant="beta", signing_secret=SECRETS["T_SIGN"]
        )
        status, _ = await client.send(conversation_id="c-beta", text="hello")
        assert status == 202
        [reply] = await receiver.wait_for(1)
        assert (reply.payload["text"], reply.payload["persona"]["display_name"]) == (
            STORED_REPLY,
            "Sales",
        )


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("core", "routing.default_persona"),
        ("infra", "routing.rules.0.persona"),
    ],
)
async def test_disabling_a_persona_the_routing_needs_is_422_and_changes_nothing(
    pair: Pair, name: str, path: str
) -> None:
    status, body = await pair.call("DELETE", f"/v1/personas/{name}")
    assert status == 422, body
    assert body["error"] == "invalid_persona"
    paths = [p["path"] for p in body["problems"]]
    assert path in paths
    if name == "core":  # the tenant names it too, by its id
        assert "tenants.acme.default_persona" in paths
    assert await pair.stored_version() == 0
    assert name in await pair.names(pair.first)


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ({"tools": ["run_command"]}, "personas.ops.tools", "acts on the host"),
        ({"tools": ["mcp:shell/*"]}, "personas.ops.tools", "process on the host"),
        ({"tools": ["mcp:shell/ls"]}, "personas.ops.tools", "process on the host"),
        ({"knowledge_dir": "/etc"}, "personas.ops.knowledge_dir", "on the host"),
        (
            {"tools": ["run_command"], "access": {"internal_only": True}},
            "personas.ops.tools",
            "acts on the host",
        ),
        # Any variable of the gateway's environment, sent as a bearer token to our server.
        (
            {"agent": {"kind": "llm", "options": {**LLM, "api_key_env": "T_SIGN"}}},
            "personas.ops.agent.options",
            "only where a persona file sends it",
        ),
        (
            {"agent": {"kind": "webhook", "options": {**WEBHOOK, "secrets_env": ["T_SIGN"]}}},
            "personas.ops.agent.options",
            "only where a persona file sends it",
        ),
        (
            {"agent": {"kind": "llm", "options": {**LLM, "allow_private": True}}},
            "personas.ops.agent.options.allow_private",
            "private network",
        ),
        (
            {"agent": {"kind": "webhook", "options": {**WEBHOOK, "allow_private_network": True}}},
            "personas.ops.agent.options.allow_private_network",
            "private network",
        ),
    ],
)
async def test_attack_a_persona_defined_through_the_api_cannot_act_on_the_host(
    pair: Pair, change: dict[str, Any], path: str, reason: str
) -> None:
    status, body = await pair.call("PUT", "/v1/personas/ops", body=_persona("Ops", **change))
    assert status == 422, body
    assert body["error"] == "invalid_persona"
    assert any(p["path"] == path and reason in p["message"] for p in body["problems"]), body
    assert await pair.stored_version() == 0
    assert "ops" not in await pair.names(pair.first)
    # Replacing a file's persona is held to the same rule.
    status, body = await pair.call("PUT", "/v1/personas/core", body=_persona(**change))
    assert status == 422, body
    assert await pair.stored_version() == 0


async def test_an_llm_persona_without_the_hosts_secrets_may_be_defined(pair: Pair) -> None:
    """The refusals above are of the host's reach, not of the agent kind."""
    status, body = await pair.call(
        "PUT", "/v1/personas/ops", body=_persona("Ops", agent={"kind": "llm", "options": LLM})
    )
    assert status == 200, body
    assert body["agent"] == "llm"


@pytest.mark.parametrize(
    ("document", "error", "where"),
    [
        (_persona(extra_key=1), "invalid", "extra_key"),
        (_persona(access={"internal_only": 0}), "invalid", "access.internal_only"),
        (_persona(name="other"), "invalid", "name"),
        ({"agent": {"kind": "rules"}}, "invalid", "display_name"),
        (_persona(agent={"kind": "oracle"}), "invalid_persona", "personas.ops.agent"),
        (
            _persona(agent={"kind": "rules", "options": {"rules": "x"}}),
            "invalid_persona",
            "personas.ops.agent",
        ),
        (_persona(tools=["teleport"]), "invalid_persona", "personas.ops.tools"),
        (_persona(tools=["mcp:nowhere/*"]), "invalid_persona", "personas.ops.tools"),
    ],
)
async def test_a_bad_persona_document_is_422_and_changes_nothing(
    pair: Pair, document: dict[str, Any], error: str, where: str
) -> None:
    status, body = await pair.call("PUT", "/v1/personas/ops", body=document)
    assert status == 422, body
    assert body["error"] == error, body
    if error == "invalid":
        assert where in body["message"]
    else:
        assert where in [p["path"] for p in body["problems"]], body
    assert await pair.stored_version() == 0
    assert "ops" not in await pair.names(pair.first)


async def test_a_persona_the_tenants_could_not_reach_is_422(pair: Pair) -> None:
    """The reach report runs as ``flowbiz check`` runs it: the default persona made
    internal-only leaves the tenant's customer channel without an answer."""
    status, body = await pair.call(
        "PUT", "/v1/personas/core", body=_persona(access={"internal_only": True})
    )
    assert status == 422, body
    assert body["problems"], body
    assert all(p["path"].startswith("tenants.acme") for p in body["problems"]), body
    assert await pair.stored_version() == 0


@pytest.mark.parametrize(("role", "tenant"), [(Role.VIEWER, None), (Role.ADMIN, "acme")])
async def test_only_a_global_admin_may_define_or_disable_a_persona(
    pair: Pair, role: Role, tenant: str | None
) -> None:
    headers = await _key(pair.first, role, tenant)
    status, _ = await pair.call("PUT", "/v1/personas/sales", body=_persona(), headers=headers)
    assert status == 403
    status, _ = await pair.call("DELETE", "/v1/personas/docs", headers=headers)
    assert status == 403
    assert await pair.stored_version() == 0
    assert await pair.names(pair.first) == ["core", "docs", "infra"]
