"""A Slack channel added through the admin API to a gateway started without any: its
events are accepted and answered without a restart, by another process too."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from connectors.slack.emulator import SlackEmulator, event_callback, message_event
from gateway.admin.keys import Role, create_key
from tests.connectors.slack.conftest import TEAM, sender_for, slack_channel, slack_config
from tests.harness import eventually, http_tenant, running_gateway


@pytest.fixture(autouse=True)
def _http_env(channel_env: None) -> None:
    """The seed's HTTP channel reads the test channels' secrets."""


async def test_a_slack_channel_added_at_run_time_is_served(
    store_url: str,
    personas_dir: Path,
    emulator: SlackEmulator,
    session: aiohttp.ClientSession,
) -> None:
    data = slack_config(store_url, personas_dir, emulator, tenants=[http_tenant(None)])
    async with running_gateway(data) as first, running_gateway(data) as second:
        envelope = event_callback(message_event(text="pricing", channel="D0ALICE"))
        status, body = await sender_for(session, second).event(envelope)
        assert status == 404  # no Slack block anywhere yet
        assert "unknown_tenant" in body

        rt = first.runtime
        assert rt.store is not None
        _, token = await create_key(rt.store, rt.keyspace, name="admin", role=Role.ADMIN)
        slack_tenant = {"name": "Slacky", "channels": [slack_channel(emulator)]}
        async with session.put(
            first.ops_url + "/v1/tenants/slacky",
            json=slack_tenant,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200, await response.text()

        async def accepted() -> bool:
            fresh = event_callback(message_event(text="pricing", channel="D0ALICE", team=TEAM))
            return (await sender_for(session, second).event(fresh))[0] == 200

        await eventually(accepted, timeout=5)
        [post] = await emulator.wait_for_posts(1)
        assert post.team_id == TEAM
        assert "29 a month" in post.text

        # The HTTP tenant of the seed still answers on both.
        assert first.runtime.config.tenant("acme") is not None
        assert second.runtime.config.tenant("slacky") is not None


async def test_a_slack_workspace_of_another_tenant_is_refused(
    store_url: str,
    personas_dir: Path,
    emulator: SlackEmulator,
    session: aiohttp.ClientSession,
) -> None:
    """acme (the file) holds the workspace: a tenant claiming it too is a 422, nothing stored."""
    data = slack_config(store_url, personas_dir, emulator)
    async with running_gateway(data) as gw:
        rt = gw.runtime
        assert rt.store is not None
        _, token = await create_key(rt.store, rt.keyspace, name="admin", role=Role.ADMIN)
        body = {"channels": [slack_channel(emulator)]}
        async with session.put(
            gw.ops_url + "/v1/tenants/thief",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 422
            problems = (await response.json())["problems"]
        assert [p["path"] for p in problems] == ["tenants.thief.channels.0.team_id"]
        assert TEAM in problems[0]["message"]
        assert await rt.store.get_state(rt.keyspace.tenants_overlay()) is None
        assert rt.config.tenant("thief") is None


async def test_an_add_to_slack_app_added_at_run_time_can_be_installed(
    store_url: str,
    personas_dir: Path,
    emulator: SlackEmulator,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway started with no Slack block: a tenant adds an "Add to Slack" app through the
    admin API, and its install link works at once (the routes were mounted at start)."""
    from cryptography.fernet import Fernet

    monkeypatch.setenv("T_APP_SECRET", "app-signing-secret")
    monkeypatch.setenv("T_CLIENT_SECRET", "client-secret")
    monkeypatch.setenv("T_TOKEN_KEY", Fernet.generate_key().decode())
    data = slack_config(store_url, personas_dir, emulator, tenants=[http_tenant(None)])
    app_block = {
        "kind": "slack",
        "signing_secret": "env:T_APP_SECRET",
        "api_base_url": emulator.api_url,
        "install": {
            "client_id": "1111.2222",
            "client_secret": "env:T_CLIENT_SECRET",
            "token_keys": ["env:T_TOKEN_KEY"],
            "redirect_url": "https://gw.example.com/slack/oauth_redirect",
            "authorize_url": emulator.oauth.authorize_url,
        },
    }
    async with running_gateway(data) as gw:
        install = f"{gw.url}/slack/install/distco"
        async with session.get(install, allow_redirects=False) as response:
            assert response.status == 404
        rt = gw.runtime
        assert rt.store is not None
        _, token = await create_key(rt.store, rt.keyspace, name="admin", role=Role.ADMIN)
        async with session.put(
            gw.ops_url + "/v1/tenants/distco",
            json={"name": "Distco", "channels": [app_block]},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200, await response.text()
        async with session.get(install, allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"].startswith(emulator.oauth.authorize_url)
