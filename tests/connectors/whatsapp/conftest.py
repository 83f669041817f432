"""Fixtures for the WhatsApp connector: the Twilio emulator, a config builder."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.whatsapp.emulator import TwilioEmulator
from tests.connectors.whatsapp.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PERSONAS,
    PUBLIC_BASE,
    SENDER,
    TEMPLATE_SID,
)
from tests.harness import base_config

ConfigFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """The SQLite file store when this tree has it, else the in-process reference store."""
    if importlib.util.find_spec("gateway.store.sqlite") is not None:
        return f"sqlite:///{tmp_path}/gw.db"
    return "memory://"


@pytest.fixture
async def emulator() -> AsyncIterator[TwilioEmulator]:
    twilio = await TwilioEmulator(accounts={ACCOUNT_SID: AUTH_TOKEN}).start()
    try:
        yield twilio
    finally:
        await twilio.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def make_config(
    store_url: str, emulator: TwilioEmulator, monkeypatch: pytest.MonkeyPatch
) -> ConfigFactory:
    """A gateway config with one WhatsApp channel for tenant acme; keywords override it."""
    monkeypatch.setenv("WA_TEST_AUTH_TOKEN", AUTH_TOKEN)

    def build(**channel: Any) -> dict[str, Any]:
        block: dict[str, Any] = {
            "kind": "whatsapp",
            "account_sid": ACCOUNT_SID,
            "auth_token": "env:WA_TEST_AUTH_TOKEN",
            "from_number": SENDER,
            "public_base_url": PUBLIC_BASE,
            "api_base_url": emulator.url,
            "templates": {
                "core": {
                    "content_sid": TEMPLATE_SID,
                    "variables": {"1": "$profile_name", "2": "$display_name"},
                }
            },
        }
        block.update(channel)
        block = {k: v for k, v in block.items() if v is not None}
        data = base_config(store_url, personas_dir=str(PERSONAS))
        data["routing"] = {"default_persona": "core"}
        data["tenants"] = [{"id": "acme", "name": "Acme", "channels": [block]}]
        return data

    return build
