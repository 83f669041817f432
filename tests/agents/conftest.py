"""Fixtures for agent tests: the OpenAI emulator, the example FAQ bot, agent contexts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp import web

import gateway  # noqa: F401 - import the core first: agents.persona and gateway.app import each other
from agents.base import AgentContext, HistoryTurn
from agents.emulators.openai import OpenAIEmulator
from agents.examples.faq_bot import FaqBot
from agents.persona import Persona
from connectors.base import ChannelCapabilities
from gateway.models import Channel, ConversationKey, InboundMessage, Participant

BOT_SECRET = "bot-secret-new"
BOT_SECRET_OLD = "bot-secret-old"


@pytest.fixture(autouse=True)
def _channel_env(channel_env: None) -> None:
    """Applies the suite's ``channel_env`` to every test in this folder."""


@pytest.fixture
async def emulator():
    emulator = await OpenAIEmulator(api_key="sk-test-emulator").start()
    yield emulator
    await emulator.stop()


class RunningBot:
    def __init__(self, bot: FaqBot, runner: web.AppRunner) -> None:
        self.bot = bot
        self.runner = runner
        self.port = runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"


@pytest.fixture
async def faq_bot():
    """The example FAQ bot on a loopback port; it knows only the old secret (mid-rotation)."""
    bot = FaqBot([BOT_SECRET_OLD])
    runner = web.AppRunner(bot.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield RunningBot(bot, runner)
    await runner.cleanup()


@pytest.fixture(autouse=True)
def agent_env(monkeypatch):
    monkeypatch.setenv("BOT_SECRET", BOT_SECRET)
    monkeypatch.setenv("BOT_SECRET_OLD", BOT_SECRET_OLD)
    monkeypatch.setenv("LLM_KEY", "sk-test-emulator")


def make_context(
    persona: Persona,
    text: str,
    *,
    history: tuple[HistoryTurn, ...] = (),
    buttons: bool = True,
    message_id: str | None = None,
) -> AgentContext:
    message = InboundMessage(
        event_id="evt-1",
        conversation=ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c1"),
        sender=Participant(id="u1", display_name="Alice"),
        text=text,
        **({"id": message_id} if message_id else {}),
    )
    return AgentContext(
        message=message,
        persona=persona,
        history=history,
        capabilities=ChannelCapabilities(buttons=buttons),
        variables={
            "user_name": "Alice",
            "display_name": persona.display_name,
            "tenant_name": "Acme",
            "persona": persona.name,
        },
    )


def turn(role: str, text: str) -> HistoryTurn:
    return HistoryTurn(role=role, text=text, at=datetime(2024, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
