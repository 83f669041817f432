"""Routes that only read the store answer 503 during an outage, never 500."""

import aiohttp

from connectors.http_api.emulator import HttpChannelClient
from tests.conftest import start_redis_server
from tests.harness import SECRETS, base_config, http_tenant, running_gateway


async def test_long_poll_during_a_store_outage_is_503_and_counted(tmp_path):
    """With Redis gone, reading replies gets 503 `store_unavailable` and a metric."""
    server = start_redis_server(tmp_path)
    try:
        data = base_config(server.url, tenants=[http_tenant(None)])
        async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
            client = HttpChannelClient(
                session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
            )
            server.kill()
            url = f"{gw.url}/v1/channels/http/acme/conversations/c1/replies"
            headers = {"Authorization": f"Bearer {client.api_key}"}
            async with session.get(url, headers=headers) as response:
                assert response.status == 503
                assert (await response.json())["error"] == "store_unavailable"
            metric = gw.runtime.metrics.registry.get_sample_value(
                "flowbiz_inbound_total", {"channel": "http", "outcome": "store_unavailable"}
            )
            assert metric == 1
    finally:
        server.stop()
