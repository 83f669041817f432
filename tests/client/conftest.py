"""A served gateway (SQLite, one HTTP channel tenant ``acme``) and an admin key for it."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from connectors.http_api.emulator import CallbackReceiver
from gateway.admin.keys import Role, create_key
from gateway.client import AdminClient, ChannelClient
from tests.harness import SECRETS, RunningGateway, base_config, http_tenant, running_gateway


@pytest.fixture(autouse=True)
def _channel_env(channel_env: None) -> None:
    """Applies the suite's ``channel_env`` to every test in this folder."""


@dataclass(slots=True)
class Served:
    gateway: RunningGateway
    admin: AdminClient  # an admin key's client
    channel: ChannelClient  # the tenant's HTTP channel, with its API key
    token: str


@pytest.fixture
async def served(tmp_path, receiver: CallbackReceiver) -> AsyncIterator[Served]:
    data = base_config(
        f"sqlite:///{tmp_path}/g.db",
        tenants=[http_tenant(receiver.url)],
        media={"dir": str(tmp_path / "media")},
    )
    async with running_gateway(data) as gw:
        rt = gw.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
        async with (
            AdminClient(gw.ops_url, token) as admin,
            ChannelClient(gw.url, "acme", api_key=SECRETS["T_API_KEY"]) as channel,
        ):
            yield Served(gw, admin, channel, token)
