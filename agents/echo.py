"""The echo agent: repeats what it was told. Useful to see a channel work end to end."""

from __future__ import annotations

from typing import Any

from agents.base import AgentContext, AgentReply

__all__ = ["EchoAgent"]


class EchoAgent:
    def __init__(self, *, prefix: str = "You said: ") -> None:
        self.prefix = prefix

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EchoAgent:
        return cls(prefix=str(options.get("prefix", "You said: ")))

    async def respond(self, context: AgentContext) -> AgentReply:
        return AgentReply.text(f"{self.prefix}{context.message.text}")
