"""The echo agent: repeats what it was told, and sends back the files it was sent (the
ones the gateway kept). Useful to see a channel work end to end, media included."""

from __future__ import annotations

from typing import Any

from agents.base import AgentContext, AgentReply, ReplyPart

__all__ = ["DEFAULT_PREFIX", "EchoAgent"]

DEFAULT_PREFIX = "You said: "  # the persona's agent.options.prefix, when not given


class EchoAgent:
    def __init__(self, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EchoAgent:
        return cls(prefix=str(options.get("prefix", DEFAULT_PREFIX)))

    async def respond(self, context: AgentContext) -> AgentReply:
        message = context.message
        # Only what the gateway kept can go back out (a refused file has no bytes here);
        # places and contact cards carry their content and go back as they came.
        returned = tuple(
            a.model_copy(update={"url": None})
            for a in message.attachments
            if a.blob is not None or a.location is not None or a.contact is not None
        )
        return AgentReply(
            parts=(ReplyPart(text=f"{self.prefix}{message.text}", attachments=returned),)
        )
