"""Fixtures for the Slack channel: the emulator, a signing sender, a running gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.signature import Clock, SignatureVerifier

from connectors.base import ConnectorContext, InboundRequest, InboundResult
from connectors.slack import SlackConnector
from connectors.slack.emulator import EmulatedWorkspace, SlackEmulator, SlackSender
from gateway.config import parse_config
from gateway.envelope import RawEvent, is_raw_event
from gateway.metrics import Metrics
from gateway.models import InboundMessage
from gateway.store import Keyspace
from tests.harness import RunningGateway, base_config, running_gateway

SECRET = "slack-signing-secret-acme"
SECRET_2 = "slack-signing-secret-globex"
TEAM = "T0FLOWBIZ"
TEAM_2 = "T0GLOBEX"
ACME = EmulatedWorkspace()
GLOBEX = EmulatedWorkspace(
    team_id=TEAM_2,
    bot_token="xoxb-globex-bot-token",
    bot_user_id="U0GLOBOT",
    bot_id="B0GLOBOT",
    app_token="xapp-globex-app-token",
    app_id="A0GLOBAPP",
    team_domain="globex",
)

# Paragraphs of ~1,000 characters, ~9,000 in all, with the characters Slack makes us escape.
LONG_TEXT = "\n".join(
    f"Part {n} <tag> & co: " + "lorem ipsum dolor sit amet " * 36 for n in range(9)
).rstrip()


@pytest.fixture(autouse=True)
def slack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_SLACK_SECRET", SECRET)
    monkeypatch.setenv("T_SLACK_BOT", ACME.bot_token)
    monkeypatch.setenv("T_SLACK_APP", ACME.app_token)
    monkeypatch.setenv("T_SLACK_SECRET_2", SECRET_2)
    monkeypatch.setenv("T_SLACK_BOT_2", GLOBEX.bot_token)
    monkeypatch.setenv("T_SLACK_BAD_BOT", "xoxb-revoked-token")


@pytest.fixture
def personas_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(
        "name: core\n"
        "display_name: Acme Helper\n"
        "signature: '— Acme Helper'\n"
        "icon_url: https://cdn.example.com/acme-helper.png\n"
        "agent:\n"
        "  kind: rules\n"
        "  options:\n"
        "    rules:\n"
        "      - keywords: [hello]\n"
        "        reply: 'Hello $user_name!'\n"
        "        buttons:\n"
        "          - {label: Opening hours, value: opening hours}\n"
        "          - {label: Pricing, value: pricing}\n"
        "      - keywords: [pricing]\n"
        "        reply: 'Pro costs 29 a month.'\n"
        "      - keywords: [hours]\n"
        "        reply: 'We are open 9 to 18.'\n"
        "    fallback: 'fallback: $user_name'\n"
    )
    (folder / "echo.yaml").write_text(
        "name: echo\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: ''}}\n"
    )
    return folder


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    emulator = await SlackEmulator(workspaces=(ACME, GLOBEX)).start()
    yield emulator
    await emulator.stop()


def slack_channel(emulator: SlackEmulator, **overrides: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "kind": "slack",
        "team_id": TEAM,
        "signing_secret": "env:T_SLACK_SECRET",
        "bot_token": "env:T_SLACK_BOT",
        "api_base_url": emulator.api_url,
        "response_url_prefixes": [f"{emulator.base_url}/hooks/"],
        "files_base_url": emulator.base_url,
        "request_timeout_seconds": 0.5,
        "messages_per_second": 100,
        "burst": 100,
    }
    block.update(overrides)
    return block


def slack_config(
    store_url: str,
    personas_dir: Path,
    emulator: SlackEmulator,
    *,
    tenants: list[dict[str, Any]] | None = None,
    **channel: Any,
) -> dict[str, Any]:
    data = base_config(
        store_url,
        tenants=tenants
        or [{"id": "acme", "name": "Acme", "channels": [slack_channel(emulator, **channel)]}],
    )
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {
        "default_persona": "core",
        "rules": [{"persona": "echo", "keywords": ["echo"]}],
    }
    return data


GatewayFactory = Callable[..., AbstractAsyncContextManager[RunningGateway]]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/gateway.db"


@pytest.fixture
def slack_gateway(store_url: str, personas_dir: Path, emulator: SlackEmulator) -> GatewayFactory:
    """Start the real gateway with an acme Slack channel (keyword overrides for the block)."""

    def start(
        *, pipeline: dict[str, Any] | None = None, **channel: Any
    ) -> AbstractAsyncContextManager[RunningGateway]:
        data = slack_config(store_url, personas_dir, emulator, **channel)
        data["pipeline"].update(pipeline or {})
        return running_gateway(data)

    return start


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sender_for(
    session: aiohttp.ClientSession, gw: RunningGateway, secret: str = SECRET
) -> SlackSender:
    return SlackSender(session=session, gateway_url=gw.url, signing_secret=secret)


class FixedClock(Clock):
    """slack_sdk's Clock, pinned, to test the five-minute window at its edges."""

    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


def make_connector(
    personas_dir: Path, *, clock: Clock | None = None, **channel: Any
) -> SlackConnector:
    """A connector built exactly as the app builds it, for calling its routes directly."""
    block: dict[str, Any] = {
        "kind": "slack",
        "team_id": TEAM,
        "signing_secret": "env:T_SLACK_SECRET",
        "bot_token": "env:T_SLACK_BOT",
        "bot_user_id": ACME.bot_user_id,
        "bot_id": ACME.bot_id,
        # No store and no Slack here: the parse asks users.info only where a test says so.
        "fetch_user_names": False,
    }
    block.update(channel)
    data = base_config("memory://", tenants=[{"id": "acme", "channels": [block]}])
    data["personas_dir"] = str(personas_dir)
    config = parse_config(data)
    context = ConnectorContext(
        config=config,
        keyspace=Keyspace(prefix="t", partitions=4),
        metrics=Metrics(),
    )
    return SlackConnector(context=context, channels=config.channels_of_kind("slack"), clock=clock)


def signed_request(
    path: str,
    body: bytes,
    *,
    secret: str = SECRET,
    timestamp: int,
    content_type: str = "application/json",
) -> InboundRequest:
    ts = str(timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return InboundRequest(
        method="POST",
        path=path,
        url=f"http://127.0.0.1{path}",
        headers={
            "content-type": content_type,
            "x-slack-request-timestamp": ts,
            "x-slack-signature": signature,
        },
        query={},
        body=body,
    )


async def parsed(connector: SlackConnector, result: InboundResult) -> list[InboundMessage]:
    """The messages the worker makes of what a route stored, each of the conversation the
    edge keyed it by (the worker dead-letters any other)."""
    messages = []
    for encoded in result.encoded:
        assert is_raw_event(encoded.payload)
        event = RawEvent.model_validate_json(encoded.payload)
        message = await connector.parse(event)
        if message is not None:
            assert message.conversation.key == event.conversation == encoded.conversation_key
            assert message.event_id == event.event_id == encoded.event_id
            messages.append(message)
    return messages


async def inbox_entries(gw: RunningGateway) -> int:
    """How many inbound messages the gateway has stored, over every partition."""
    rt = gw.runtime
    assert rt.store is not None
    total = 0
    for partition in range(rt.keyspace.partitions):
        total += len(await rt.store.range(rt.keyspace.inbox(partition), count=1000))
    return total


NOW = 1_700_000_000
