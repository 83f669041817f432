"""Tenants defined and disabled through the admin API, picked up by every process.

Two gateways share one Redis: what the first one's admin API stores, the second serves
within a poll, and a third started afterwards serves from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway import tenant_sync
from gateway.admin.keys import Role, create_key
from gateway.admin.schemas import TenantDefinition
from gateway.audit import AuditLog
from gateway.config import TenantConfig
from tests.harness import SECRETS, RunningGateway, base_config, http_tenant, running_gateway

pytestmark = pytest.mark.redis


@dataclass
class Pair:
    first: RunningGateway
    second: RunningGateway
    session: aiohttp.ClientSession
    admin: dict[str, str]
    data: dict[str, Any]

    async def call(
        self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.first.ops_url + path, json=body, headers=headers or self.admin
        ) as response:
            text = await response.text()
            return response.status, (await response.json()) if text else None

    async def send(self, gw: RunningGateway, tenant: str, text: str = "hello") -> int:
        client = HttpChannelClient(
            session=self.session, base_url=gw.url, tenant=tenant, signing_secret=SECRETS["T_SIGN"]
        )
        status, _ = await client.send(conversation_id=f"c-{text}", text=text)
        return status


async def _key(gw: RunningGateway, role: Role, tenant: str | None = None) -> dict[str, str]:
    rt = gw.runtime
    assert rt.store is not None
    _, token = await create_key(rt.store, rt.keyspace, name=role.value, role=role, tenant=tenant)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def pair(redis_url: str, receiver: CallbackReceiver) -> AsyncIterator[Pair]:
    data = base_config(redis_url, tenants=[http_tenant(receiver.url)])
    async with (
        running_gateway(data) as first,
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


async def test_a_tenant_put_on_one_process_is_served_by_the_other_then_disabled(
    pair: Pair, receiver: CallbackReceiver
) -> None:
    assert await pair.send(pair.second, "beta") == 404  # nobody knows beta yet

    status, body = await pair.call(
        "PUT", "/v1/tenants/beta", body=http_tenant(receiver.url, "beta")
    )
    assert status == 200, body
    assert body["id"] == "beta"
    assert body["channels"] == [{"kind": "http", "id": "http"}]
    assert await pair.send(pair.first, "beta", "first") == 202  # applied before the answer

    async def second_accepts() -> bool:
        return await pair.send(pair.second, "beta", "second") == 202

    await _until(second_accepts)
    callbacks = await receiver.wait_for(2)
    answered = {cb.payload["conversation_id"] for cb in callbacks}
    assert {"c-first", "c-second"} <= answered
    status, listed = await pair.call("GET", "/v1/tenants")
    assert [t["id"] for t in listed["tenants"]] == ["acme", "beta"]

    # A third process started now reads the stored tenant at its start.
    async with running_gateway(pair.data) as third:
        assert await pair.send(third, "beta", "third") == 202
        await receiver.wait_for(3)

    status, _ = await pair.call("DELETE", "/v1/tenants/beta")
    assert status == 204
    assert await pair.send(pair.first, "beta", "gone") == 404

    async def second_refuses() -> bool:
        return await pair.send(pair.second, "beta", "gone2") == 404

    await _until(second_refuses)
    assert await pair.send(pair.second, "acme") == 202  # the others are untouched
    status, _ = await pair.call("GET", "/v1/tenants/beta")
    assert status == 404

    # Enabled again by a PUT.
    status, _ = await pair.call("PUT", "/v1/tenants/beta", body=http_tenant(receiver.url, "beta"))
    assert status == 200
    assert await pair.send(pair.first, "beta", "back") == 202

    rt = pair.first.runtime
    assert rt.store is not None
    events = [e for _, e in await AuditLog(rt.store, rt.keyspace).read(tenant="beta", limit=50)]
    changes = [(e.action, e.status, e.detail.get("change")) for e in events]
    assert changes == [
        ("putTenant", 200, "created"),
        ("disableTenant", 204, "disabled"),
        ("putTenant", 200, "enabled"),
    ]
    put = next(e for e in events if e.action == "putTenant")
    assert put.detail["secrets"] == [
        "env:T_API_KEY",
        "env:T_CALLBACK",
        "env:T_SIGN",
        "env:T_SIGN_OLD",
    ]
    assert all(value not in str(e.detail) for e in events for value in SECRETS.values())


async def test_the_audit_names_the_keys_a_replacement_changed(
    pair: Pair, receiver: CallbackReceiver
) -> None:
    changed = {**http_tenant(receiver.url), "plan": "pro"}
    status, _ = await pair.call("PUT", "/v1/tenants/acme", body=changed)
    assert status == 200
    rt = pair.first.runtime
    assert rt.store is not None
    [(_, event)] = await AuditLog(rt.store, rt.keyspace).read(tenant="acme")
    assert (event.action, event.detail["change"], event.detail["fields"]) == (
        "putTenant",
        "replaced",
        ["plan"],
    )


async def test_a_file_tenant_is_disabled_and_replaced(
    pair: Pair, receiver: CallbackReceiver
) -> None:
    changed = {**http_tenant(receiver.url), "name": "Acme Renamed", "plan": "pro"}
    status, body = await pair.call("PUT", "/v1/tenants/acme", body=changed)
    assert status == 200, body
    assert (body["name"], body["configured_plan"]) == ("Acme Renamed", "pro")

    async def second_renamed() -> bool:
        tenant = pair.second.runtime.config.tenant("acme")
        return tenant is not None and tenant.name == "Acme Renamed"

    await _until(second_renamed)
    status, _ = await pair.call("DELETE", "/v1/tenants/acme")
    assert status == 204
    assert await pair.send(pair.first, "acme") == 404
    status, _ = await pair.call("DELETE", "/v1/tenants/acme")
    assert status == 404  # disabled already


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"plan": "gold"}, "tenants.beta.plan"),
        ({"default_persona": "nobody"}, "tenants.beta.default_persona"),
        ({"notify_url": "https://example.com/n", "notify_secrets": ["env:UNSET_NOTIFY"]},
         "tenants.beta.notify_secrets.0"),
        ({"channels": [{"kind": "http", "signing_secrets": ["env:UNSET_SIGN"]}]},
         "tenants.beta.channels.0.signing_secrets.0"),
        ({"channels": [{"kind": "pager"}]}, "tenants.beta.channels.0.kind"),
        ({"channels": [{"kind": "http", "signing_secrets": ["in-clear"]}]},
         "tenants.beta.channels.0.signing_secrets.0"),
    ],
)  # fmt: skip
async def test_a_bad_tenant_is_422_with_its_problems_and_changes_nothing(
    pair: Pair, receiver: CallbackReceiver, change: dict[str, Any], path: str
) -> None:
    status, body = await pair.call(
        "PUT", "/v1/tenants/beta", body={**http_tenant(None, "beta"), **change}
    )
    assert status == 422, body
    assert body["error"] == "invalid_tenant"
    assert path in [p["path"] for p in body["problems"]]
    assert "in-clear" not in str(body)
    rt = pair.first.runtime
    assert rt.store is not None
    assert await rt.store.get_state(rt.keyspace.tenants_overlay()) is None
    assert rt.config.tenant("beta") is None


async def test_every_problem_is_listed_at_once(pair: Pair) -> None:
    bad = {**http_tenant(None, "beta"), "plan": "gold", "default_persona": "nobody"}
    status, body = await pair.call("PUT", "/v1/tenants/beta", body=bad)
    assert status == 422
    paths = {p["path"] for p in body["problems"]}
    assert {"tenants.beta.plan", "tenants.beta.default_persona"} <= paths


async def test_a_body_whose_id_is_another_tenant_is_refused(pair: Pair) -> None:
    status, body = await pair.call("PUT", "/v1/tenants/beta", body=http_tenant(None, "gamma"))
    assert status == 422, body


async def test_viewer_operator_and_tenant_keys_may_not(pair: Pair) -> None:
    for headers in (
        await _key(pair.first, Role.VIEWER),
        await _key(pair.first, Role.OPERATOR),
        await _key(pair.first, Role.ADMIN, tenant="acme"),
    ):
        status, _ = await pair.call(
            "PUT", "/v1/tenants/beta", body=http_tenant(None, "beta"), headers=headers
        )
        assert status == 403
        status, _ = await pair.call("DELETE", "/v1/tenants/acme", headers=headers)
        assert status == 403
    assert pair.first.runtime.config.tenant("acme") is not None


async def test_racing_admins_lose_nothing(pair: Pair, receiver: CallbackReceiver) -> None:
    async def put(gw: RunningGateway, tenant: str) -> int:
        async with pair.session.put(
            gw.ops_url + f"/v1/tenants/{tenant}",
            json=http_tenant(receiver.url, tenant),
            headers=pair.admin,
        ) as response:
            return response.status

    statuses = await asyncio.gather(
        *(put(gw, f"t{n}") for n in range(6) for gw in [(pair.first, pair.second)[n % 2]])
    )
    assert statuses == [200] * 6

    async def both_serve_all() -> bool:
        return all(
            gw.runtime.config.tenant(f"t{n}") is not None
            for gw in (pair.first, pair.second)
            for n in range(6)
        )

    await _until(both_serve_all)


async def test_stored_tenants_survive_a_restart_of_every_process(
    redis_url: str, receiver: CallbackReceiver
) -> None:
    data = base_config(redis_url, tenants=[http_tenant(receiver.url)])
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(running_gateway(data))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        admin = await _key(gw, Role.ADMIN)
        async with session.put(
            gw.ops_url + "/v1/tenants/beta", json=http_tenant(receiver.url, "beta"), headers=admin
        ) as response:
            assert response.status == 200
    async with running_gateway(data) as again:
        assert again.runtime.config.tenant("beta") is not None


def test_the_body_has_the_keys_of_a_tenant_block() -> None:
    """The API's tenant body and the file's tenant block name the same keys."""
    assert set(TenantDefinition.model_fields) == set(TenantConfig.model_fields)


async def test_a_worker_that_has_not_polled_yet_catches_up_instead_of_failing(
    redis_url: str, receiver: CallbackReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web process applied the new tenant; the worker process would only poll in a
    minute: its turn and its send apply what the store holds instead of dead-lettering."""
    monkeypatch.setattr(tenant_sync, "POLL_SECONDS", 60.0)
    data = base_config(redis_url, tenants=[http_tenant(receiver.url)])
    async with (
        running_gateway(data, role="web") as web,
        running_gateway(data, role="worker") as worker,
        aiohttp.ClientSession() as session,
    ):
        admin = await _key(web, Role.ADMIN)
        async with session.put(
            web.ops_url + "/v1/tenants/beta", json=http_tenant(receiver.url, "beta"), headers=admin
        ) as response:
            assert response.status == 200
        assert worker.runtime.config.tenant("beta") is None  # it has not polled
        client = HttpChannelClient(
            session=session, base_url=web.url, tenant="beta", signing_secret=SECRETS["T_SIGN"]
        )
        status, _ = await client.send(conversation_id="late", text="hello")
        assert status == 202
        [callback] = await receiver.wait_for(1)
        assert callback.payload["conversation_id"] == "late"
        assert worker.runtime.config.tenant("beta") is not None
