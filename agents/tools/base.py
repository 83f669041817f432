"""The ``Tool`` protocol: a name, a JSON schema for its arguments and an async ``run``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agents.base import AgentContext

__all__ = ["Tool", "ToolContext", "ToolResult"]


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may look at: the turn the agent is answering."""

    agent: AgentContext


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What goes back to the model (``content``), and effects on the conversation."""

    content: str
    is_error: bool = False
    switch_persona: str | None = None
    handoff: str | None = None  # a reason: hand the conversation to people


class Tool(Protocol):
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON schema of the arguments object

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        """Do the work. Arguments were already validated against ``parameters``."""
        ...
