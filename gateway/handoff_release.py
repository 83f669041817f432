"""The release command: what an operator writes in a desk thread to hand a conversation back
to the bot, and how the announcement tells them, for the channel the desk is on.

Guarantees:

- a desk's announcement never asks for something its channel cannot post: Slack never posts
  a message that starts with ``/`` (the client runs it as a slash command), so a Slack desk
  whose ``release_command`` is not set takes ``!release`` and names it; a configured command
  starting with ``/`` is named there with the reminder to type a space before it;
- a desk without ``release_command`` keeps taking ``/release`` (on Slack written after a
  space, as the Slack desk was first documented); a configured command is the only one;
- a command matches the whole message, ignoring case and surrounding spaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import StringConstraints

from gateway.models import Channel

__all__ = [
    "RELEASE_COMMAND",
    "ReleaseCommand",
    "instructions",
    "is_release",
    "release_commands",
    "release_hint",
]

RELEASE_COMMAND = "/release"
# The command a desk on these channels takes first when none is configured.
_FIRST_ON: Mapping[Channel, str] = {Channel.SLACK: "!release"}
# Channels whose clients run a message starting with "/" as a command of their own.
_SLASH_RUNS_A_COMMAND: Mapping[Channel, str] = {Channel.SLACK: "Slack"}

ReleaseCommand = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
]


def release_commands(channel: Channel, configured: str | None) -> tuple[str, ...]:
    """What releases a conversation at a desk on ``channel``; the announcement names the
    first."""
    if configured is not None:
        return (configured,)
    return tuple(dict.fromkeys((_FIRST_ON.get(channel, RELEASE_COMMAND), RELEASE_COMMAND)))


def is_release(text: str, channel: Channel, configured: str | None) -> bool:
    commands = {c.lower() for c in release_commands(channel, configured)}
    return text.strip().lower() in commands


def release_hint(channel: Channel, configured: str | None) -> str:
    """How to release, in words that work on ``channel`` ("write !release")."""
    command = release_commands(channel, configured)[0]
    platform = _SLASH_RUNS_A_COMMAND.get(channel)
    if platform is not None and command.startswith("/"):
        return (
            f"write {command} with a space before the slash ({platform} takes a message "
            "starting with / as a command of its own)"
        )
    return f"write {command}"


def instructions(channel: Channel, configured: str | None) -> str:
    """The announcement's last line: how to answer the customer and how to release."""
    return (
        f"Reply in this thread to answer the customer; {release_hint(channel, configured)} "
        "to hand the conversation back to the assistant."
    )
