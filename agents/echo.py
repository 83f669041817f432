"""The echo agent: repeats what it was told. Useful to see a channel work end to end."""

from __future__ import annotations

from typing import Any

from agents.base import AgentContext, AgentReply

__all__ = ["DEFAULT_PREFIX", "EchoAgent"]

DEFAULT_PREFIX = "You said: "  # the persona's agent.options.prefix, when not given


class EchoAgent:
    def __init__(self, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EchoAgent:
        return cls(prefix=str(options.get("prefix", DEFAULT_PREFIX)))

    async def respond(self, context: AgentContext) -> AgentReply:
        return AgentReply.text(f"{self.prefix}{context.message.text}")
