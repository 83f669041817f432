""" "Add to Slack": the OAuth install flow against the emulated Slack, the installed
workspace's events and replies in every process, uninstall, token rotation, and attacks on
the flow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from cryptography.fernet import Fernet

from connectors.slack.emulator import (
    EmulatedApp,
    EmulatedWorkspace,
    SlackEmulator,
    SlackSender,
    event_callback,
    message_event,
)
from tests.connectors.slack.conftest import slack_config
from tests.harness import RunningGateway, eventually, running_gateway

APP_SECRET = "distributed-app-signing-secret"
CLIENT_ID = "1111.2222"
REDIRECT = "https://gw.example.com/slack/oauth_redirect"
NEWCO = EmulatedWorkspace(
    team_id="T0NEWCO",
    bot_token="xoxb-newco-installed-token",
    bot_user_id="U0NEWBOT",
    bot_id="B0NEWBOT",
    team_domain="newco",
)


@pytest.fixture(autouse=True)
def install_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("T_CLIENT_SECRET", "client-secret-of-the-app")
    monkeypatch.setenv("T_TOKEN_KEY", Fernet.generate_key().decode())


def install_config(store_url: str, personas_dir: Path, emulator: SlackEmulator, **install: Any):
    block = {
        "kind": "slack",
        "id": "app",
        "signing_secret": "env:T_APP_SECRET",
        "api_base_url": emulator.api_url,
        "request_timeout_seconds": 2,
        "messages_per_second": 100,
        "burst": 100,
        "install": {
            "client_id": CLIENT_ID,
            "client_secret": "env:T_CLIENT_SECRET",
            "token_keys": ["env:T_TOKEN_KEY"],
            "redirect_url": REDIRECT,
            "authorize_url": emulator.oauth.authorize_url,
            "cache_seconds": 1,
            **install,
        },
    }
    tenants = [{"id": "acme", "name": "Acme", "channels": [block]}]
    return slack_config(store_url, personas_dir, emulator, tenants=tenants)


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """The installer's browser: redirects are followed by hand, cookies kept by hand."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def start_install(browser: aiohttp.ClientSession, gw: RunningGateway) -> tuple[str, str]:
    """``/slack/install/acme`` → Slack's consent page → back: (the redirect URL, the cookie)."""
    async with browser.get(f"{gw.url}/slack/install/acme", allow_redirects=False) as response:
        assert response.status == 302
        consent = response.headers["Location"]
        cookie = response.headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    async with browser.get(consent, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        back = response.headers["Location"]
    assert back.startswith(REDIRECT + "?")
    return gw.url + "/slack/oauth_redirect?" + urlsplit(back).query, cookie


async def finish_install(browser: aiohttp.ClientSession, url: str, cookie: str) -> tuple[int, str]:
    async with browser.get(url, headers={"Cookie": cookie}, allow_redirects=False) as response:
        return response.status, await response.text()


def sender(session: aiohttp.ClientSession, gw: RunningGateway) -> SlackSender:
    return SlackSender(session=session, gateway_url=gw.url, signing_secret=APP_SECRET)


def newco_message(text: str) -> dict[str, Any]:
    event = message_event(text=text, channel="D0NEWCO", team=NEWCO.team_id)
    return event_callback(event, team_id=NEWCO.team_id, bot_user_id=NEWCO.bot_user_id)


@pytest.mark.redis
async def test_a_workspace_installs_the_app_and_is_answered_with_its_token(
    redis_url: str, personas_dir: Path, emulator: SlackEmulator, browser
) -> None:
    """Installed through one process, a workspace's first event reaches another process
    (same store, started before the install) and is answered with the installed token."""
    app = emulator.oauth.register(EmulatedApp(CLIENT_ID, "client-secret-of-the-app"))
    emulator.oauth.consent(NEWCO)
    data = install_config(redis_url, personas_dir, emulator)
    async with running_gateway(data) as first, running_gateway(data) as second:
        # Unknown before the install: refused, nothing stored.
        assert (await sender(browser, second).event(newco_message("pricing")))[0] == 404
        url, cookie = await start_install(browser, first)
        [asked] = emulator.oauth.authorize_requests
        assert asked["client_id"] == CLIENT_ID
        assert set(asked["scope"].split(",")) >= {"chat:write", "im:history", "commands"}
        status, page = await finish_install(browser, url, cookie)
        assert (status, "The app is installed in newco.") == (200, page[-34:-4])
        assert app.exchanges == 1
        await asyncio.sleep(1.1)  # the second process's cached "not installed" runs out
        assert (await sender(browser, second).event(newco_message("pricing")))[0] == 200
        [post] = await emulator.wait_for_posts(1)
    assert post.team_id == NEWCO.team_id  # posted with the installation's token
    assert post.shown_text == "Pro costs 29 a month."


async def test_the_installation_is_sealed_in_the_store(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, browser
) -> None:
    emulator.oauth.register(EmulatedApp(CLIENT_ID, "client-secret-of-the-app"))
    emulator.oauth.consent(NEWCO)
    async with running_gateway(install_config(store_url, personas_dir, emulator)) as gw:
        url, cookie = await start_install(browser, gw)
        assert (await finish_install(browser, url, cookie))[0] == 200
        rt = gw.runtime
        assert rt.store is not None
        key = rt.keyspace.slack_installation(CLIENT_ID, f"T:{NEWCO.team_id}")
        sealed = await rt.store.get_record(key)
    assert sealed is not None
    assert NEWCO.bot_token.encode() not in sealed
    assert NEWCO.team_id.encode() not in sealed


async def test_uninstall_forgets_the_workspace(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, browser
) -> None:
    emulator.oauth.register(EmulatedApp(CLIENT_ID, "client-secret-of-the-app"))
    emulator.oauth.consent(NEWCO)
    async with running_gateway(install_config(store_url, personas_dir, emulator)) as gw:
        url, cookie = await start_install(browser, gw)
        assert (await finish_install(browser, url, cookie))[0] == 200
        gone = event_callback({"type": "app_uninstalled"}, team_id=NEWCO.team_id)
        assert (await sender(browser, gw).event(gone))[0] == 200
        assert (await sender(browser, gw).event(newco_message("pricing")))[0] == 404
        events = gw.runtime.metrics.registry.get_sample_value(
            "flowbiz_channel_events_total", {"channel": "slack", "event": "uninstalled"}
        )
    assert events == 1
    assert emulator.posted == []


async def test_a_rotating_token_is_refreshed_before_a_send(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, browser
) -> None:
    """Token rotation on: a token with less than ``refresh_before_seconds`` left is
    refreshed once, and the reply goes out with the new token."""
    app = emulator.oauth.register(
        EmulatedApp(CLIENT_ID, "client-secret-of-the-app", rotating=True, expires_in=120)
    )
    emulator.oauth.consent(NEWCO)
    data = install_config(store_url, personas_dir, emulator, refresh_before_seconds=300)
    async with running_gateway(data) as gw:
        url, cookie = await start_install(browser, gw)
        assert (await finish_install(browser, url, cookie))[0] == 200
        assert (await sender(browser, gw).event(newco_message("pricing")))[0] == 200
        [post] = await emulator.wait_for_posts(1)
    assert app.refreshes >= 1
    assert post.team_id == NEWCO.team_id
    [current] = [w for w in emulator.workspaces if w.team_id == NEWCO.team_id]
    assert current.bot_token != NEWCO.bot_token  # the old token no longer works there
    assert any(c.method == "chat.postMessage" and c.status == 200 for c in emulator.calls)


async def test_attack_a_state_not_issued_to_this_browser_is_refused(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, browser
) -> None:
    """An attacker's own redirect link (their code and state) sent to a victim, a state
    replayed, one without the cookie: 400 each, and no code is exchanged."""
    app = emulator.oauth.register(EmulatedApp(CLIENT_ID, "client-secret-of-the-app"))
    emulator.oauth.consent(NEWCO)
    emulator.oauth.consent(NEWCO)
    async with running_gateway(install_config(store_url, personas_dir, emulator)) as gw:
        attackers_url, _ = await start_install(browser, gw)
        _, victims_cookie = await start_install(browser, gw)
        assert (await finish_install(browser, attackers_url, victims_cookie))[0] == 400
        assert (await finish_install(browser, attackers_url, ""))[0] == 400
        state = parse_qs(urlsplit(attackers_url).query)["state"][0]
        forged = f"flowbiz-slack-oauth-state={state}"
        assert (await finish_install(browser, attackers_url, forged))[0] == 200
        assert (await finish_install(browser, attackers_url, forged))[0] == 400  # used
        hostile = f"{gw.url}/slack/oauth_redirect?code=x&state=%00%0d%0aSet-Cookie:a"
        status, page = await finish_install(browser, hostile, 'flowbiz-slack-oauth-state="x;\\\\')
        assert status == 400
        assert "Set-Cookie" not in page
        refused = gw.runtime.metrics.registry.get_sample_value(
            "flowbiz_channel_events_total", {"channel": "slack", "event": "install_refused"}
        )
    assert app.exchanges == 1
    assert refused == 4


async def test_install_for_a_tenant_without_an_app_is_404(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, browser
) -> None:
    data = install_config(store_url, personas_dir, emulator)
    async with running_gateway(data) as gw:
        url = f"{gw.url}/slack/install/globex"
        async with browser.get(url, allow_redirects=False) as response:
            assert response.status == 404


@pytest.mark.parametrize(
    ("install", "problem"),
    [
        ({"client_id": "not-an-id"}, "client_id"),
        ({"redirect_url": "https://gw.example.com/elsewhere"}, "redirect_url"),
        ({"token_keys": []}, "token_keys"),
    ],
)
def test_a_bad_install_block_is_a_config_error(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, install, problem
) -> None:
    from gateway.config import parse_config
    from gateway.errors import ConfigError

    data = install_config(store_url, personas_dir, emulator, **install)
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert any(problem in path for path, _ in caught.value.problems), caught.value.problems


def test_a_token_key_that_is_not_a_fernet_key_is_a_config_error(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, monkeypatch
) -> None:
    from gateway.config import parse_config
    from gateway.errors import ConfigError

    monkeypatch.setenv("T_TOKEN_KEY", "short")
    with pytest.raises(ConfigError) as caught:
        parse_config(install_config(store_url, personas_dir, emulator))
    assert any("token_keys" in path for path, _ in caught.value.problems)


@pytest.mark.redis
async def test_installs_reach_every_process_through_redis_only(
    redis_url: str, personas_dir: Path, emulator: SlackEmulator, browser
) -> None:
    """A process that never saw the install learns it from the store on first need."""
    emulator.oauth.register(EmulatedApp(CLIENT_ID, "client-secret-of-the-app"))
    emulator.oauth.consent(NEWCO)
    data = install_config(redis_url, personas_dir, emulator)
    async with running_gateway(data) as first:
        url, cookie = await start_install(browser, first)
        assert (await finish_install(browser, url, cookie))[0] == 200
    async with running_gateway(data) as later:
        assert (await sender(browser, later).event(newco_message("hours")))[0] == 200
        [post] = await emulator.wait_for_posts(1)
        await eventually(lambda: post.team_id == NEWCO.team_id)


def test_one_app_installed_for_two_tenants_is_a_config_error(
    store_url: str, personas_dir: Path, emulator: SlackEmulator
) -> None:
    """Its installations would not say whose they are: `flowbiz check` names the second."""
    from gateway.config import parse_config
    from gateway.errors import ConfigError

    data = install_config(store_url, personas_dir, emulator)
    block = data["tenants"][0]["channels"][0]
    data["tenants"].append({"id": "globex", "name": "Globex", "channels": [block]})
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    [(where, problem)] = caught.value.problems
    assert where == "tenants.1.channels.0.install.client_id"
    assert problem.startswith("the Slack app 1111.2222 is already configured at tenants.0.")
