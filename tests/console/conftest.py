"""Fixtures for the console's browser tests: one Chromium per module (Debian's, never a
downloaded one), a gateway with a LINE channel (emulated LINE) and an HTTP channel for a
second tenant, and API keys of each role.

Screenshots go to ``test-artifacts/console/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from connectors.line.emulator import LineEmulator, LineWebhookSender
from gateway.admin import keys as apikeys
from gateway.admin.keys import Role
from tests.harness import REPO, SECRETS, RunningGateway, base_config, http_tenant, running_gateway

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts" / "console"

DEST = "U" + "a1" * 16
SECRET = "line-channel-secret-console"
TOKEN = "line-access-token-console"
ALICE = "U" + "0a" * 16

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("chromium is not installed (.ci/system-deps installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture(autouse=True)
def console_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_LINE_SECRET", SECRET)
    monkeypatch.setenv("T_LINE_TOKEN", TOKEN)
    for name, value in SECRETS.items():  # the second tenant's HTTP channel
        monkeypatch.setenv(name, value)


@pytest.fixture
def personas_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    core = {
        "name": "core",
        "display_name": "Acme Helper",
        "agent": {
            "kind": "rules",
            "options": {
                "rules": [
                    {"keywords": ["hello"], "reply": "Hello $user_name!"},
                    {"keywords": ["pricing"], "reply": "Pro costs 29 a month."},
                    {
                        "keywords": ["plans"],
                        "reply": "Our plans:",
                        "cards": [{"title": "Pro plan", "text": "29 a month"}],
                        "options": {
                            "button": "Choose",
                            "options": [{"label": "Free", "value": "free"}],
                        },
                        "quick_replies": [{"label": "Talk to a person", "value": "human"}],
                    },
                ],
                "fallback": "I did not get that.",
            },
        },
    }
    (folder / "core.yaml").write_text(yaml.safe_dump(core), encoding="utf-8")
    return folder


@dataclass
class Console:
    """A running gateway, its LINE emulator and a key of each role."""

    gw: RunningGateway
    line: LineWebhookSender
    emulator: LineEmulator
    tokens: dict[str, str]
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.gw.ops_url + "/console/"

    async def key(self, name: str, role: Role, tenant: str | None = None) -> str:
        store = self.gw.runtime.store
        assert store is not None
        _, token = await apikeys.create_key(
            store, self.gw.runtime.keyspace, name=name, role=role, tenant=tenant
        )
        return token


@asynccontextmanager
async def console_gateway(
    tmp_path: Path, personas_dir: Path, **http: Any
) -> AsyncIterator[Console]:
    emulator = await LineEmulator().start()
    emulator.add_channel(destination=DEST, access_token=TOKEN, channel_secret=SECRET)
    emulator.add_profile(ALICE, "Alice")
    line_block = {
        "kind": "line",
        "destination": DEST,
        "channel_secret": "env:T_LINE_SECRET",
        "channel_access_token": "env:T_LINE_TOKEN",
        "api_base_url": emulator.url,
        "reply_token_margin_seconds": 10,
        "request_timeout_seconds": 2,
    }
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        tenants=[
            {"id": "acme", "name": "Acme", "channels": [line_block]},
            http_tenant(None, tenant="beta"),
        ],
    )
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {"default_persona": "core"}
    if http:
        data["http"] = http
    try:
        async with aiohttp.ClientSession() as session, running_gateway(data) as gw:
            sender = LineWebhookSender(
                session=session,
                gateway_url=gw.url,
                destination=DEST,
                channel_secret=SECRET,
                emulator=emulator,
            )
            yield Console(gw=gw, line=sender, emulator=emulator, tokens={}, http=session)
    finally:
        await emulator.stop()


async def sign_in(browser: Any, console: Console, token: str) -> Any:
    """A fresh browser context signed in with ``token``; returns its page on the inbox."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(5000)
    page = await context.new_page()
    await page.goto(console.url)
    await page.fill("input[name=key]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/inbox", timeout=5000)
    return page


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
