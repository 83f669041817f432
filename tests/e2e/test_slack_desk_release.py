"""Releasing a conversation from a Slack desk, with what a Slack user can actually post.

Slack never posts a message that starts with ``/``: the client runs it as a slash command.
So a Slack desk's announcement must not tell operators to write ``/release``; by default it
names ``!release`` (and `` /release``, with a space first, still works), an HTTP desk keeps
``/release``, and ``release_command`` overrides both. Through the Slack, LINE and Twilio
emulators, with the gateway and emulators of ``test_slack_desk``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.handoff import HandoffConfig
from gateway.handoff_release import is_release, release_commands, release_hint
from gateway.models import Channel
from tests.e2e import test_slack_desk as slack_desk
from tests.e2e.test_slack_desk import (
    LINE_CUSTOMER,
    NOTICE,
    RELEASED,
    Desk,
)
from tests.harness import eventually

echo_personas = slack_desk.echo_personas  # the echo persona: its reply is the customer's text

RELEASE_LINE = "to hand the conversation back to the assistant."


@pytest.fixture
def release_command() -> str | None:
    """The desk's ``release_command``; None leaves it out of the configuration."""
    return None


@pytest.fixture
async def desk(
    store_url: str,
    echo_personas: Path,
    release_command: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Desk]:
    async with slack_desk.open_desk(
        store_url, echo_personas, monkeypatch, release_command=release_command
    ) as opened:
        yield opened


def release_instruction(announcement: str) -> str:
    [line] = [part for part in announcement.splitlines() if part.endswith(RELEASE_LINE)]
    return line


async def released_in_thread(desk: Desk, thread_ts: str) -> None:
    await eventually(lambda: desk.line_texts()[-1:] == [RELEASED])
    await eventually(
        lambda: any(p.text.startswith("Released:") for p in desk.thread_posts(thread_ts))
    )
    await desk.from_line("bot again?")
    await eventually(lambda: desk.line_texts()[-1:] == ["bot again?"])  # the echo persona


async def test_slack_desk_announcement_names_a_release_command_slack_posts(desk: Desk) -> None:
    """The announcement never tells a Slack operator to start a message with "/"; what it
    names, written in the thread, gives the customer back to the bot."""
    await desk.from_line("/human")
    thread = await desk.announcement(f"{LINE_CUSTOMER} on line")
    await eventually(lambda: desk.line_texts()[-1:] == [NOTICE])
    instruction = release_instruction(thread.text)
    assert "write !release " in instruction
    assert not any(word.startswith("/") for word in instruction.split())

    await desk.operator_says("!release", thread.ts)
    await released_in_thread(desk, thread.ts)


async def test_slack_desk_still_releases_on_the_slash_command_typed_after_a_space(
    desk: Desk,
) -> None:
    """`` /release`` is how Slack posts "/release" as text; operators who learnt it keep it."""
    await desk.from_line("/human")
    thread = await desk.announcement(f"{LINE_CUSTOMER} on line")
    await desk.operator_says(" /release", thread.ts)
    await released_in_thread(desk, thread.ts)


@pytest.mark.parametrize("release_command", ["done"])
async def test_slack_desk_release_command_is_configurable(desk: Desk) -> None:
    """A configured ``release_command`` is the one the announcement names and the only one
    that releases: "!release" is then relayed to the customer like any other text."""
    await desk.from_line("/human")
    thread = await desk.announcement(f"{LINE_CUSTOMER} on line")
    assert "write done " in release_instruction(thread.text)
    await desk.operator_says("!release", thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == ["!release"])
    await desk.operator_says("Done", thread.ts)  # commands are matched case-insensitively
    await released_in_thread(desk, thread.ts)


@pytest.mark.parametrize("release_command", ["/release"])
async def test_slack_desk_with_a_slash_release_command_tells_how_slack_posts_it(
    desk: Desk,
) -> None:
    await desk.from_line("/human")
    thread = await desk.announcement(f"{LINE_CUSTOMER} on line")
    assert "write /release with a space before the slash" in release_instruction(thread.text)
    await desk.operator_says(" /release", thread.ts)
    await released_in_thread(desk, thread.ts)


def test_http_desk_keeps_slash_release_and_slack_desk_defaults_to_bang_release() -> None:
    """The commands each desk accepts, first the one its announcement names."""
    assert release_commands(Channel.HTTP, None) == ("/release",)
    assert release_commands(Channel.SLACK, None) == ("!release", "/release")
    assert release_commands(Channel.SLACK, "done") == ("done",)
    assert release_hint(Channel.HTTP, None) == "write /release"
    assert release_hint(Channel.SLACK, None) == "write !release"
    assert release_hint(Channel.HTTP, "/done") == "write /done"
    assert release_hint(Channel.SLACK, "/done").startswith("write /done with a space before")
    assert is_release(" /RELEASE ", Channel.HTTP, None)
    assert not is_release("!release", Channel.HTTP, None)
    assert not is_release("/release please", Channel.SLACK, None)


def test_a_configured_release_command_is_stripped_and_a_blank_one_refused() -> None:
    operators = {"channel": "slack", "conversation_id": "C0DESK"}
    config = HandoffConfig.model_validate({"operators": operators, "release_command": " done "})
    assert config.release_command == "done"
    with pytest.raises(ValidationError, match="release_command"):
        HandoffConfig.model_validate({"operators": operators, "release_command": "   "})
