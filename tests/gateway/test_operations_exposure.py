"""Attack: a stranger on the public webhook port reaching the operations endpoints.

``/readyz`` named the Redis host and port, ``/metrics`` counted every tenant's traffic and
``/v1/openapi.json`` described the admin API — all on the port the internet reaches. By
default they live on the operations listener (loopback) and the public port answers 404; in
mode ``public`` they answer 401 without a global admin key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.admin.keys import Role, create_key
from tests.conftest import start_redis_server
from tests.harness import RunningGateway, base_config, http_tenant, running_gateway

OPERATIONAL = ["/readyz", "/metrics", "/v1/openapi.json", "/v1/health", "/v1/keys", "/v1/tenants"]
PROBES = ["/healthz", "/readyz", "/metrics", "/", "/v1/", "/v1/health", "/status", "/debug"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _global_token(gw: RunningGateway) -> str:
    rt = gw.runtime
    assert rt.store is not None
    _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN, tenant=None)
    return token


@pytest.mark.parametrize("path", OPERATIONAL)
async def test_attack_operational_endpoints_are_not_on_the_public_port(
    redis_url: str, channel_env: None, session: aiohttp.ClientSession, path: str
) -> None:
    """404 on the public port; served on the loopback operations listener."""
    data = base_config(redis_url, tenants=[http_tenant(None)])
    async with running_gateway(data) as gw:
        assert gw.runtime.operations_url is not None
        assert gw.runtime.operations_url.startswith("http://127.0.0.1:")
        async with session.get(gw.url + path) as response:
            assert response.status == 404
        token = await _global_token(gw)
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(gw.ops_url + path, headers=headers) as response:
            assert response.status == 200


async def test_attack_nothing_public_leaks_the_store_address(
    tmp_path: Path, channel_env: None, session: aiohttp.ClientSession
) -> None:
    """No public route names the Redis host or port — not even while Redis is down, when the
    readiness probe explains why (on the operations listener only)."""
    redis = start_redis_server(tmp_path)
    port = redis.port
    data = base_config(redis.url, tenants=[http_tenant(None)])
    async with running_gateway(data, role="web") as gw:
        redis.kill()
        for path in PROBES:
            async with session.get(gw.url + path) as response:
                assert str(port) not in await response.text(), path
        async with session.get(gw.url + "/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}  # nothing about internals
        async with session.get(gw.ops_url + "/readyz") as response:
            assert response.status == 503  # the operator still learns what is wrong


@pytest.mark.parametrize("path", OPERATIONAL)
async def test_attack_public_mode_needs_a_global_admin_key(
    redis_url: str, channel_env: None, session: aiohttp.ClientSession, path: str
) -> None:
    """Mode "public": 401 without a key or with a tenant's key; a global key is served."""
    data = base_config(
        redis_url, tenants=[http_tenant(None)], http={"operations": {"mode": "public"}}
    )
    async with running_gateway(data) as gw:
        assert gw.runtime.operations_url is None  # no second listener
        rt = gw.runtime
        assert rt.store is not None
        _, tenant_token = await create_key(
            rt.store, rt.keyspace, name="t", role=Role.ADMIN, tenant="acme"
        )
        for headers in ({}, {"Authorization": "Bearer nope"}):
            async with session.get(gw.url + path, headers=headers) as response:
                assert response.status == 401
                assert str(redis_url.rsplit(":", 1)[1]) not in await response.text()
        if path in ("/readyz", "/metrics", "/v1/openapi.json"):
            tenant_auth = {"Authorization": f"Bearer {tenant_token}"}
            async with session.get(gw.url + path, headers=tenant_auth) as response:
                assert response.status in (401, 403)
        token = await _global_token(gw)
        async with session.get(gw.url + path, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            if path == "/readyz":
                assert json.loads(await r.text())["status"] == "ready"
