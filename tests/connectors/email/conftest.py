"""Fixtures for the email channel: a DKIM key, the smarthost emulator, a running gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.email.connector import EmailConnector
from connectors.email.emulator import MailSender, Smarthost, dkim_dns_record, generate_dkim_key
from gateway.models import Channel
from tests.harness import RunningGateway, base_config, running_gateway

DKIM_ENV = "TEST_ACME_DKIM_KEY"
SELECTOR = "s2024"
DOMAIN = "acme.example"
SUPPORT = "support@acme.example"
DOCS = "docs@acme.example"


@pytest.fixture(scope="session")
def dkim_key() -> bytes:
    return generate_dkim_key(2048)


@pytest.fixture(scope="session")
def dkim_record(dkim_key: bytes) -> bytes:
    return dkim_dns_record(dkim_key)


@pytest.fixture
async def smarthost() -> AsyncIterator[Smarthost]:
    host = await Smarthost().start()
    yield host
    await host.stop()


def email_block(smarthost: Smarthost, **overrides: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "kind": "email",
        "addresses": [{"address": SUPPORT}, {"address": DOCS, "persona": "docs"}],
        "listener": {"host": "127.0.0.1", "port": 0, "max_message_bytes": 512 * 1024},
        "outbound": {"host": "127.0.0.1", "port": smarthost.port, "security": "none"},
        "dkim": {"selector": SELECTOR, "domain": DOMAIN, "private_key": f"env:{DKIM_ENV}"},
    }
    block.update(overrides)
    return block


@dataclass(slots=True)
class EmailWorld:
    gateway: RunningGateway
    connector: EmailConnector
    sender: MailSender
    smarthost: Smarthost

    def metric(self, name: str, **labels: str) -> float:
        value = self.gateway.runtime.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def event(self, event: str) -> float:
        return self.metric("flowbiz_channel_events_total", channel="email", event=event)

    def inbound(self, outcome: str) -> float:
        return self.metric("flowbiz_inbound_total", channel="email", outcome=outcome)


@pytest.fixture
def dkim_env(monkeypatch: pytest.MonkeyPatch, dkim_key: bytes) -> Iterator[None]:
    monkeypatch.setenv(DKIM_ENV, dkim_key.decode())
    return


@asynccontextmanager
async def email_world(
    store_url: str, smarthost: Smarthost, **block_overrides: Any
) -> AsyncIterator[EmailWorld]:
    data = base_config(
        store_url,
        tenants=[
            {
                "id": "acme",
                "name": "Acme Corp",
                "channels": [email_block(smarthost, **block_overrides)],
            }
        ],
    )
    async with running_gateway(data) as gw:
        connector = gw.runtime.connectors[Channel.EMAIL]
        assert isinstance(connector, EmailConnector)
        has_listener = block_overrides.get("listener", True) is not None
        sender = (
            MailSender(*connector.listener_address("acme"))
            if has_listener
            else MailSender("127.0.0.1", 0)
        )
        yield EmailWorld(gateway=gw, connector=connector, sender=sender, smarthost=smarthost)


@pytest.fixture
async def world(tmp_path: Path, smarthost: Smarthost, dkim_env: None) -> AsyncIterator[EmailWorld]:
    async with email_world(f"sqlite:///{tmp_path}/gw.db", smarthost) as w:
        yield w
