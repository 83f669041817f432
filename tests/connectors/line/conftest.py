"""Fixtures for the LINE channel: the emulator, a signed webhook sender, a running gateway."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
import yaml

from agents.base import AgentReply, ReplyPart
from agents.registry import AGENT_KINDS
from connectors.line.emulator import LineEmulator, LineWebhookSender
from gateway.ingest import INBOX_GROUP
from gateway.models import Channel, ConversationKey, EventKind
from tests.harness import PERSONAS_DIR, RunningGateway, base_config, running_gateway

DEST = "U" + "a1" * 16
DEST_2 = "U" + "b2" * 16
SECRET = "line-channel-secret-one"
SECRET_2 = "line-channel-secret-two"
TOKEN = "line-access-token-one"
TOKEN_2 = "line-access-token-two"
ALICE = "U" + "0a" * 16
BOB = "U" + "0b" * 16
GROUP = "C" + "1c" * 16
ROOM = "R" + "2d" * 16

# ~26k characters in paragraphs: six text objects of at most 5,000 UTF-16 units.
LONG_REPLY = "\n".join(
    f"Paragraph {n}: " + " ".join(["lorem ipsum dolor sit amet"] * 36) for n in range(26)
)


class SleepyAgent:
    """A test bot that takes ``delay`` seconds to answer, like a slow LLM."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.delay = float(options.get("delay", 0))

    async def respond(self, context: Any) -> AgentReply:
        await asyncio.sleep(self.delay)
        return AgentReply.text(f"slow answer to: {context.message.text}")


class PartsAgent:
    """A test bot answering each text with the reply part its test set for it
    (``PartsAgent.replies``), and each ACTION with the value it carried."""

    replies: ClassVar[dict[str, ReplyPart]] = {}

    def __init__(self, options: dict[str, Any]) -> None:
        del options

    async def respond(self, context: Any) -> AgentReply:
        message = context.message
        if message.kind is EventKind.ACTION:
            return AgentReply.text(f"picked: {message.text}")
        part = self.replies.get(message.text.strip(), ReplyPart(text=f"no part: {message.text}"))
        return AgentReply(parts=(part,))


@pytest.fixture(autouse=True)
def line_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_LINE_SECRET", SECRET)
    monkeypatch.setenv("T_LINE_TOKEN", TOKEN)
    monkeypatch.setenv("T_LINE_SECRET_2", SECRET_2)
    monkeypatch.setenv("T_LINE_TOKEN_2", TOKEN_2)
    monkeypatch.setenv("T_LINE_BAD_TOKEN", "a-token-line-does-not-know")
    monkeypatch.setitem(AGENT_KINDS, "sleepy", SleepyAgent)
    monkeypatch.setitem(AGENT_KINDS, "parts", PartsAgent)


@pytest.fixture
def personas_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    core = {
        "name": "core",
        "display_name": "Acme Helper",
        "welcome": "Welcome $user_name!",
        "agent": {
            "kind": "rules",
            "options": {
                "rules": [
                    {
                        "keywords": ["hello"],
                        "reply": "Hello $user_name!",
                        "buttons": [
                            {"label": "Opening hours", "value": "opening hours"},
                            {"label": "Pricing", "value": "pricing"},
                        ],
                    },
                    {"keywords": ["pricing"], "reply": "Pro costs 29 a month."},
                    {"keywords": ["essay"], "reply": LONG_REPLY},
                ],
                "fallback": "I did not get that.",
            },
        },
    }
    (folder / "core.yaml").write_text(yaml.safe_dump(core), encoding="utf-8")
    (folder / "sleepy.yaml").write_text(
        "name: sleepy\ndisplay_name: Sleepy\n"
        "agent: {kind: sleepy, timeout_seconds: 10, options: {delay: 0.3}}\n",
        encoding="utf-8",
    )
    return folder


@pytest.fixture
async def emulator() -> AsyncIterator[LineEmulator]:
    emulator = await LineEmulator().start()
    emulator.add_channel(destination=DEST, access_token=TOKEN, channel_secret=SECRET)
    emulator.add_channel(destination=DEST_2, access_token=TOKEN_2, channel_secret=SECRET_2)
    emulator.add_profile(ALICE, "Alice")
    emulator.add_profile(BOB, "Bob")
    yield emulator
    await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def line_channel(emulator: LineEmulator, **overrides: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "kind": "line",
        "destination": DEST,
        "channel_secret": "env:T_LINE_SECRET",
        "channel_access_token": "env:T_LINE_TOKEN",
        "api_base_url": emulator.url,
        "reply_token_margin_seconds": 10,
        "request_timeout_seconds": 2,
    }
    block.update(overrides)
    return block


def line_config(
    store_url: str, personas_dir: Path, channels: list[dict[str, Any]]
) -> dict[str, Any]:
    data = base_config(store_url, tenants=[{"id": "acme", "name": "Acme", "channels": channels}])
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {
        "default_persona": "core",
        "rules": [{"persona": "sleepy", "keywords": ["slow"]}],
    }
    return data


GatewayFactory = Callable[..., AbstractAsyncContextManager[RunningGateway]]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/gw.db"


@pytest.fixture
def line_gateway(store_url: str, personas_dir: Path, emulator: LineEmulator) -> GatewayFactory:
    """Start a gateway with one LINE channel (overrides apply to its block)."""

    def start(
        *, channels: list[dict[str, Any]] | None = None, url: str | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[RunningGateway]:
        blocks = channels if channels is not None else [line_channel(emulator, **overrides)]
        return running_gateway(line_config(url or store_url, personas_dir, blocks))

    return start


@pytest.fixture
def sender(
    http: aiohttp.ClientSession, emulator: LineEmulator
) -> Callable[[str], LineWebhookSender]:
    def make(
        gateway_url: str, *, destination: str = DEST, secret: str = SECRET
    ) -> LineWebhookSender:
        return LineWebhookSender(
            session=http,
            gateway_url=gateway_url,
            destination=destination,
            channel_secret=secret,
            emulator=emulator,
        )

    return make


async def inbox_backlog(gw: RunningGateway) -> int:
    store = gw.runtime.store
    assert store is not None
    keyspace = gw.runtime.keyspace
    return sum(
        [await store.backlog(keyspace.inbox(p), INBOX_GROUP) for p in range(keyspace.partitions)]
    )


def channel_event(gw: RunningGateway, event: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "flowbiz_channel_events_total", {"channel": "line", "event": event}
    )
    return value or 0.0


@pytest.fixture
def rich_personas(tmp_path: Path) -> Path:
    """The example ``core`` persona (it answers a photo with a card), ``echo`` (it sends the
    files it was sent back) and ``parts`` (:class:`PartsAgent`)."""
    folder = tmp_path / "rich-personas"
    folder.mkdir()
    shutil.copy(PERSONAS_DIR / "core.yaml", folder / "core.yaml")
    (folder / "echo.yaml").write_text(
        "name: echo\ndisplay_name: Echo\nagent: {kind: echo}\n", encoding="utf-8"
    )
    (folder / "parts.yaml").write_text(
        "name: parts\ndisplay_name: Parts\nagent: {kind: parts}\n", encoding="utf-8"
    )
    return folder


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
def rich_gateway(
    store_url: str, rich_personas: Path, emulator: LineEmulator, media_dir: Path
) -> GatewayFactory:
    """A gateway whose one persona is ``persona``, fetching files from the emulator's content
    API; ``media`` adds to the gateway's ``media:`` block, the rest to the LINE block."""

    def start(
        *, persona: str = "core", media: dict[str, Any] | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[RunningGateway]:
        block = line_channel(emulator, data_api_base_url=emulator.url, **overrides)
        data = line_config(store_url, rich_personas, [block])
        data["routing"] = {"default_persona": persona, "rules": []}
        data["media"] = {"dir": str(media_dir), **(media or {})}
        return running_gateway(data)

    return start


def conversation_of(chat_id: str) -> str:
    return ConversationKey(
        tenant="acme", channel=Channel.LINE, conversation_id=f"line:{chat_id}"
    ).key


def media_count(gw: RunningGateway, direction: str, outcome: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "flowbiz_media_total", {"channel": "line", "direction": direction, "outcome": outcome}
    )
    return value or 0.0
