"""Malformed ``after=`` cursors through the routes that take them, on SQLite and Redis.

Before, Redis answered the HTTP channel's long-poll with 503 ``store_unavailable`` (a client
retries that forever) and the admin audit read with a 500; SQLite overflowed. Now both
stores, both routes: 400 ``bad_cursor``, and the next well-formed read still works.
"""

from __future__ import annotations

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver
from gateway.admin.keys import Role, create_key
from tests.harness import SECRETS, base_config, http_tenant, running_gateway

# Well-formed for the admin query pattern, but no store could ever have issued these ids.
BAD = ["99999999999999999999", "18446744073709551616-1", "9007199254740992"]


@pytest.fixture(autouse=True)
def _env(channel_env: None) -> None:
    """The HTTP channel's test secrets are in the environment."""


@pytest.mark.parametrize("cursor", [*BAD, "abc", "\u0661"])
async def test_attack_malformed_replies_cursor_answers_400_not_503(
    store_url: str, receiver: CallbackReceiver, cursor: str
) -> None:
    """``GET …/replies?after=<malformed>`` is a 400 with a reason, not a retryable 503."""
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    auth = {"Authorization": f"Bearer {SECRETS['T_API_KEY']}"}
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        url = f"{gw.url}/v1/channels/http/acme/conversations/c1/replies"
        async with session.get(url, params={"after": cursor}, headers=auth) as response:
            assert response.status == 400, await response.text()
            assert (await response.json())["error"] == "bad_cursor"
        async with session.get(url, params={"after": "0"}, headers=auth) as response:
            assert response.status == 200


@pytest.mark.parametrize("cursor", BAD[:2])
async def test_attack_malformed_audit_cursor_answers_400_not_500(
    store_url: str, receiver: CallbackReceiver, cursor: str
) -> None:
    """``GET /v1/audit?after=<out of range>`` is a 400 ``bad_cursor``, counted."""
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        assert rt.store is not None
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
        auth = {"Authorization": f"Bearer {token}"}
        url = f"{gw.ops_url}/v1/audit"
        async with session.get(url, params={"after": cursor}, headers=auth) as response:
            assert response.status == 400, await response.text()
            assert (await response.json())["error"] == "bad_cursor"
        async with session.get(url, headers=auth) as response:
            assert response.status == 200
        assert 'error="bad_cursor",operation="listAuditEvents"' in rt.metrics.render().decode()
