"""A tenant-scoped key against other tenants' dead letters and audit events.

Other tenants' letters must neither shorten its pages nor be detectable (404, exactly like
a handle that names nothing), and its audit read must cost one bounded range, not a walk
over every tenant's events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis

from connectors.http_api.emulator import CallbackReceiver
from gateway.admin.keys import Role, create_key
from gateway.audit import AuditEvent, AuditLog
from gateway.deadletters import DeadLetter
from gateway.store import Keyspace, Store
from tests.harness import RunningGateway, base_config, http_tenant, running_gateway


@dataclass
class Scene:
    gw: RunningGateway
    session: aiohttp.ClientSession
    store: Store
    keyspace: Keyspace
    acme: dict[str, str]  # an acme-scoped operator key's headers

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        async with self.session.get(
            self.gw.ops_url + path, params=params, headers=self.acme
        ) as response:
            return response.status, await response.json()


@pytest.fixture
async def scene(store_url: str, receiver: CallbackReceiver) -> AsyncIterator[Scene]:
    tenants = [http_tenant(receiver.url), http_tenant(receiver.url, tenant="beta")]
    async with (
        running_gateway(base_config(store_url, tenants=tenants)) as gw,
        aiohttp.ClientSession() as session,
    ):
        store = gw.runtime.store
        assert store is not None
        keyspace = gw.runtime.keyspace
        _, token = await create_key(
            store, keyspace, name="acme-ops", role=Role.OPERATOR, tenant="acme"
        )
        yield Scene(gw, session, store, keyspace, {"Authorization": f"Bearer {token}"})


async def _letter(scene: Scene, tenant: str, partition: int) -> str:
    letter = DeadLetter(
        kind="outbound",
        reason="callback answered 400",
        tenant=tenant,
        partition=partition,
        message={"idempotency_key": f"{tenant}-{partition}"},
    )
    stream = scene.keyspace.dead_letters(partition)
    entry_id = await scene.store.append(stream, letter.model_dump_json().encode())
    return f"{partition}:{entry_id}"


async def test_attack_scoped_dead_letter_page_is_full_when_other_tenants_dominate(
    scene: Scene,
) -> None:
    """30 of beta's letters sit before acme's 3 in every partition: acme still gets a full
    page of 10, then all 12 of its own, and never one of beta's."""
    partitions = scene.keyspace.partitions
    for p in range(partitions):
        for _ in range(30):
            await _letter(scene, "beta", p)
    mine = {await _letter(scene, "acme", p) for p in range(partitions) for _ in range(3)}
    status, body = await scene.get("/v1/dead-letters", limit="10")
    assert status == 200
    assert len(body["dead_letters"]) == 10
    assert {d["handle"] for d in body["dead_letters"]} <= mine
    status, body = await scene.get("/v1/dead-letters", limit="100")
    assert {d["handle"] for d in body["dead_letters"]} == mine


async def test_attack_other_tenants_dead_letter_handle_answers_404_like_a_missing_one(
    scene: Scene,
) -> None:
    """Inspect, replay and discard of beta's handle answer what a handle naming nothing
    answers: same status, same body. Beta's letter is untouched."""
    beta = await _letter(scene, "beta", 1)
    partition, entry_id = beta.split(":")
    missing = f"{partition}:{entry_id}9"  # well-formed, names nothing
    answers: dict[str, list[tuple[int, str]]] = {beta: [], missing: []}
    for handle, seen in answers.items():
        url = f"{scene.gw.ops_url}/v1/dead-letters/{handle}"
        for method, path in (("GET", url), ("POST", url + "/replay"), ("DELETE", url)):
            async with scene.session.request(method, path, headers=scene.acme) as response:
                seen.append((response.status, await response.text()))
    assert answers[beta] == answers[missing]
    assert {status for status, _ in answers[beta]} == {404}
    assert await scene.store.get_entry(scene.keyspace.dead_letters(1), entry_id) is not None


@pytest.mark.redis
async def test_attack_scoped_audit_read_does_not_walk_other_tenants_events(
    redis_url: str, receiver: CallbackReceiver
) -> None:
    """3000 of beta's events before acme's: acme's read is one XRANGE of ``limit`` entries
    (it took seven pages of 500 before), and its cursor pages acme's events only."""
    tenants = [http_tenant(receiver.url), http_tenant(receiver.url, tenant="beta")]
    async with (
        running_gateway(base_config(redis_url, tenants=tenants)) as gw,
        aiohttp.ClientSession() as session,
    ):
        store, keyspace = gw.runtime.store, gw.runtime.keyspace
        assert store is not None
        _, token = await create_key(
            store, keyspace, name="acme-admin", role=Role.ADMIN, tenant="acme"
        )
        audit = AuditLog(store, keyspace)
        for n in range(3000):
            await audit.write(AuditEvent(actor="k", action=f"beta.{n}", tenant="beta"))
        for n in range(3):
            await audit.write(AuditEvent(actor="k", action=f"acme.{n}", tenant="acme"))
        with redis.Redis.from_url(redis_url) as client:
            client.config_resetstat()
        auth = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{gw.ops_url}/v1/audit?limit=2", headers=auth) as response:
            first = (await response.json())["events"]
        assert [e["event"]["action"] for e in first] == ["acme.0", "acme.1"]
        assert _xrange_calls(redis_url) == 1
        after = first[-1]["cursor"]
        async with session.get(f"{gw.ops_url}/v1/audit?after={after}", headers=auth) as response:
            rest = (await response.json())["events"]
        assert [e["event"]["action"] for e in rest] == ["acme.2"]


def _xrange_calls(url: str) -> int:
    """XRANGE calls since the last CONFIG RESETSTAT, as the server counts them."""
    with redis.Redis.from_url(url) as client:
        stats: dict[str, dict[str, int]] = client.info("commandstats")
    return stats.get("cmdstat_xrange", {}).get("calls", 0)
