"""The admin API while its store is down: a real redis-server stopped mid-test.

Every route answers 503 ``store_unavailable`` with ``Retry-After`` (never a 500), and
``/v1/health`` answers ``degraded``; once Redis is back (same port, AOF kept the keys) the
same key works again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver
from gateway.admin.keys import Role, create_key
from gateway.admin.routes import RETRY_AFTER_SECONDS
from gateway.conversations import conversation_handle
from tests.conftest import RedisServer, start_redis_server
from tests.harness import base_config, eventually, http_tenant, running_gateway

pytestmark = pytest.mark.redis

C = "/v1/tenants/acme/conversations/" + conversation_handle("acme/http/c1")
# One route of each kind: read, list, scoped read, mutation (audited), health.
CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/tenants/acme/quota", None),
    ("GET", "/v1/dead-letters", None),
    ("GET", "/v1/dead-letters/0:1", None),
    ("GET", "/v1/audit?after=1-0", None),
    ("GET", C + "/receipts", None),
    ("POST", "/v1/keys", {"name": "k", "role": "viewer"}),
    ("PUT", "/v1/tenants/acme/plan", {"plan": "free"}),
]


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[list[RedisServer]]:
    folder = tmp_path / "redis"
    folder.mkdir()
    servers = [start_redis_server(folder, appendonly=True)]
    yield servers
    for server in servers:
        server.stop()


async def test_attack_store_outage_answers_503_with_retry_after_not_500(
    aof_redis: list[RedisServer], receiver: CallbackReceiver
) -> None:
    """Redis stopped: each route says 503 store_unavailable + Retry-After, health degraded."""
    redis = aof_redis[0]
    data = base_config(redis.url, tenants=[http_tenant(receiver.url)])
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        assert rt.store is not None
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
        auth = {"Authorization": f"Bearer {token}"}

        async def health() -> tuple[int, dict[str, Any], str | None]:
            async with session.get(gw.ops_url + "/v1/health", headers=auth) as response:
                return response.status, await response.json(), response.headers.get("Retry-After")

        assert (await health())[1]["status"] == "ok"

        redis.stop()
        status, body, retry_after = await health()
        assert (status, body["status"], body["store"]) == (503, "degraded", "unreachable")
        assert retry_after == str(RETRY_AFTER_SECONDS)
        assert body["store_error"] is None  # nothing about the store's address
        for method, path, payload in CALLS:
            async with session.request(method, gw.ops_url + path, json=payload, headers=auth) as r:
                assert r.status == 503, (method, path, r.status, await r.text())
                assert (await r.json())["error"] == "store_unavailable"
                assert r.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        # No key can be checked during the outage, so no caller learns more than that.
        assert (body["consumers"], body["connectors"], body["personas"]) == (None, None, None)
        async with session.get(gw.ops_url + "/v1/health") as response:
            assert response.status == 401  # no key at all needs no store to refuse
        metrics = rt.metrics.render().decode()
        assert 'flowbiz_admin_errors_total{error="store_unavailable",operation="getHealth"}' in (
            metrics
        )

        aof_redis.append(start_redis_server(redis.directory, appendonly=True, port=redis.port))

        async def healthy() -> bool:
            return (await health())[0] == 200

        await eventually(healthy, timeout=20)
        async with session.get(gw.ops_url + "/v1/tenants/acme/quota", headers=auth) as response:
            assert response.status == 200
