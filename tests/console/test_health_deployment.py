"""The Health page shows the whole deployment, in a real browser, on one real redis-server.

Two gateway processes share the store: one ``--role all`` in the test process (serving the
console) and one real ``flowbiz serve --role worker`` subprocess. The page lists both,
per role, and every partition's lease holder, read from the store without joining the
membership or taking a lease. With no worker or dispatcher anywhere, every partition is
flagged as having no holder. A tenant-scoped key sees the processes and leases but not
the queue depths, which count every tenant's messages.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from connectors.http_api.emulator import HttpChannelClient
from gateway.admin import keys as apikeys
from gateway.admin.keys import Role
from gateway.console.views.health import ROLES
from gateway.store import Store, open_store
from tests.console.conftest import shot, sign_in
from tests.harness import (
    SECRETS,
    RunningGateway,
    base_config,
    eventually,
    http_tenant,
    running_gateway,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


class _Console:
    """What :func:`tests.console.conftest.sign_in` needs of a running gateway."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.url = gw.ops_url + "/console/"


def _config(redis_url: str) -> dict[str, Any]:
    return base_config(redis_url, tenants=[http_tenant(None), http_tenant(None, tenant="beta")])


@pytest.fixture
def worker_process(redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``flowbiz serve --role worker`` on the test's redis-server."""
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(_config(redis_url)), encoding="utf-8")
    proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [
            *(sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)),
            *("--role", "worker", "--port", "0", "--operations-port", "0"),
        ],
        env={**os.environ, **SECRETS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def _admin_token(gw: RunningGateway, role: Role, tenant: str | None = None) -> str:
    store = gw.runtime.store
    assert store is not None
    _, token = await apikeys.create_key(
        store, gw.runtime.keyspace, name="Ada", role=role, tenant=tenant
    )
    return token


async def _settled(store: Store, gw: RunningGateway, processes: set[str]) -> bool:
    """Every partition of every role is held, and held by each of ``processes``."""
    keyspace = gw.runtime.keyspace
    for role in ROLES:
        keys = [keyspace.lease(role, p) for p in range(keyspace.partitions)]
        holders = await store.lease_holders(keys)
        if any(h is None for h in holders.values()):
            return False
        if {h.owner for h in holders.values() if h is not None} != processes:
            return False
    return True


async def test_health_shows_both_processes_and_every_partitions_holder(
    browser: Any, redis_url: str, worker_process: subprocess.Popen[bytes]
) -> None:
    async with running_gateway(_config(redis_url)) as gw:
        store = gw.runtime.store
        assert store is not None
        keyspace = gw.runtime.keyspace
        # The subprocess's id is "<host>-<pid>-<random>" (gateway.app); find it by its pid.
        prefix = f"{socket.gethostname()}-{worker_process.pid}-"

        async def other() -> str | None:
            members = await store.members(keyspace.members("worker"))
            return next((m.owner for m in members if m.owner.startswith(prefix)), None)

        sub_id = await eventually(other, timeout=20)
        both = {gw.runtime.consumer_id, sub_id}
        await eventually(lambda: _settled(store, gw, both), timeout=20)

        page = await sign_in(browser, _Console(gw), await _admin_token(gw, Role.VIEWER))
        await page.goto(gw.ops_url + "/console/health")
        processes = page.locator("#processes")
        for process in both:
            for role in ROLES:
                row = processes.locator(f"tr[data-process='{process}'][data-role='{role}']")
                assert await row.count() == 1, (process, role)
                assert await row.locator("td.held").inner_text() != "none"
        assert (
            "this process"
            in await processes.locator(
                f"tr[data-process='{gw.runtime.consumer_id}']"
            ).first.inner_text()
        )
        rows = page.locator("#partitions tbody tr")
        assert await rows.count() == keyspace.partitions
        seen: dict[str, set[str]] = {role: set() for role in ROLES}
        for p in range(keyspace.partitions):
            for role in ROLES:
                cell = page.locator(f"#partitions tr[data-partition='{p}'] td[data-role='{role}']")
                owner = await cell.locator("code").inner_text()
                assert owner in both, (p, role, owner)
                seen[role].add(owner)
        assert seen == {role: both for role in ROLES}  # each process holds some of each role
        assert await page.locator(".unheld").count() == 0
        assert "no holder" not in await page.locator("#partitions").inner_text()
        await shot(page, "health-two-processes")
        await page.context.close()

        # Looking changed nothing: no third member, and the page's process is no member twice.
        members = await store.members(keyspace.members("worker"))
        assert {m.owner for m in members} == both


async def test_health_flags_partitions_nobody_holds(browser: Any, redis_url: str) -> None:
    """With only a web process, no partition has a holder and the page says so; the web
    process itself is listed (its membership heartbeat), and leaves the set on shutdown."""
    async with running_gateway(_config(redis_url), role="web") as gw:
        page = await sign_in(browser, _Console(gw), await _admin_token(gw, Role.ADMIN))
        await page.goto(gw.ops_url + "/console/health")
        web = page.locator(
            f"#processes tr[data-process='{gw.runtime.consumer_id}'][data-role='web']"
        )
        assert await web.count() == 1
        assert "this process" in await web.inner_text()
        assert "expires in" in await web.inner_text()
        every = ", ".join(str(p) for p in range(gw.runtime.keyspace.partitions))
        for role in ROLES:
            flag = page.locator(f".unheld[data-role='{role}']")
            assert every in await flag.inner_text()
            cells = page.locator(f"#partitions td[data-role='{role}']", has_text="no holder")
            assert await cells.count() == gw.runtime.keyspace.partitions
        assert "no live worker or dispatcher" in await page.locator("#processes").inner_text()
        await page.context.close()
    store = await open_store(redis_url)
    try:
        assert await store.members(gw.runtime.keyspace.web_members()) == []
    finally:
        await store.aclose()


async def test_attack_tenant_scoped_viewer_reads_other_tenants_queue_depths(
    browser: Any, redis_url: str
) -> None:
    """acme's message waits in the inbox; beta's viewer must not see it counted."""
    async with running_gateway(_config(redis_url), role="web") as gw:
        async with aiohttp.ClientSession() as session:
            client = HttpChannelClient(
                session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
            )
            status, _ = await client.send(conversation_id="c1", text="hello", event_id="e1")
            assert status == 202

        admin = await sign_in(browser, _Console(gw), await _admin_token(gw, Role.ADMIN))
        await admin.goto(gw.ops_url + "/console/health")
        assert "inbox 1" in await admin.locator("#queues h2").inner_text()  # it is counted
        await admin.context.close()

        token = await _admin_token(gw, Role.VIEWER, tenant="beta")
        page = await sign_in(browser, _Console(gw), token)
        await page.goto(gw.ops_url + "/console/health")
        queues = await page.locator("#queues").inner_text()
        assert "inbox 1" not in queues
        assert await page.locator("#partitions th", has_text="backlog").count() == 0
        # What describes the deployment, not a tenant, is still there.
        assert await page.locator("#partitions tbody tr").count() == gw.runtime.keyspace.partitions
        assert await page.locator(".unheld[data-role='worker']").count() == 1
        await page.context.close()
