"""Tools that change the conversation rather than answer: switch persona, hand off."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.persona import Persona
from agents.tools.base import ToolContext, ToolResult

__all__ = ["HandoffTool", "SwitchPersonaTool"]


class SwitchPersonaTool:
    """Options: ``allowed: [docs, core]`` — the personas the model may switch to."""

    name = "switch_persona"
    description = (
        "Hand the conversation to another persona that is better suited; it answers from the "
        "next message on. Use only when the user's need clearly belongs to that persona."
    )

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed
        persona_schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if allowed:
            persona_schema["enum"] = list(allowed)
        self.parameters: Mapping[str, Any] = {
            "type": "object",
            "properties": {"persona": persona_schema},
            "required": ["persona"],
            "additionalProperties": False,
        }

    @classmethod
    def build(cls, persona: Persona, options: Mapping[str, Any]) -> SwitchPersonaTool:
        return cls(tuple(str(p) for p in options.get("allowed", ())))

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        target = str(arguments["persona"])
        return ToolResult(
            content=f"The conversation will continue with persona {target!r}.",
            switch_persona=target,
        )


class HandoffTool:
    """Hand the conversation to people (see gateway/handoff.py for what happens next)."""

    name = "handoff"
    description = (
        "Hand the conversation to a human operator when you cannot help, the user asks for a "
        "person, or the matter is sensitive. Tell the user a person will take over."
    )
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 500}},
        "required": ["reason"],
        "additionalProperties": False,
    }

    @classmethod
    def build(cls, persona: Persona, options: Mapping[str, Any]) -> HandoffTool:
        return cls()

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        return ToolResult(
            content="Handoff requested: a person will take over after your reply.",
            handoff=str(arguments["reason"]),
        )
