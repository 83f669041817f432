"""Tool kinds by name, and building the tools a persona is allowed to use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agents.persona import Persona
from agents.tools.base import Tool
from agents.tools.command import RunCommandTool
from agents.tools.conversation import HandoffTool, SwitchPersonaTool
from agents.tools.docs import SearchDocsTool

__all__ = ["TOOLS", "ToolBuilder", "build_tools"]

ToolBuilder = Callable[[Persona, Mapping[str, Any]], Tool]

TOOLS: dict[str, ToolBuilder] = {
    "search_docs": SearchDocsTool.build,
    "switch_persona": SwitchPersonaTool.build,
    "handoff": HandoffTool.build,
    "run_command": RunCommandTool.build,
}


def build_tools(persona: Persona, tool_options: Mapping[str, Mapping[str, Any]]) -> dict[str, Tool]:
    """The built-in tools ``persona`` lists, built with their options; nothing it does not
    list. Its ``mcp:`` grants are served by agents/tools/mcp.py, not built here."""
    unknown = [name for name in tool_options if name not in persona.builtin_tools]
    if unknown:
        raise KeyError(f"persona {persona.name!r}: options for tools it may not use: {unknown}")
    tools: dict[str, Tool] = {}
    for name in persona.builtin_tools:
        builder = TOOLS.get(name)
        if builder is None:
            raise KeyError(f"persona {persona.name!r}: unknown tool {name!r}")
        tools[name] = builder(persona, tool_options.get(name, {}))
    return tools
