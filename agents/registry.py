"""Agent kinds by name, and building the agent a persona declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from agents.base import Agent
from agents.echo import EchoAgent
from agents.llm import LlmAgent
from agents.persona import Persona
from agents.rules import RulesAgent
from agents.tools.mcp_servers import McpServers
from agents.webhook import WebhookAgent

__all__ = ["AGENT_KINDS", "PersonaBound", "build_agent"]

AgentBuilder = Callable[[dict[str, Any]], Agent]

AGENT_KINDS: dict[str, AgentBuilder] = {
    "rules": RulesAgent.from_options,
    "echo": EchoAgent.from_options,
    "webhook": WebhookAgent.from_options,
    "llm": LlmAgent.from_options,
}


@runtime_checkable
class PersonaBound(Protocol):
    """An agent that prepares itself for its persona (e.g. builds the tools it may use),
    given the process's MCP server connections (None: no ``mcp_servers`` configured)."""

    def bind(self, persona: Persona, *, mcp: McpServers | None = None) -> None: ...


def build_agent(persona: Persona, *, mcp: McpServers | None = None) -> Agent:
    builder = AGENT_KINDS.get(persona.agent.kind)
    if builder is None:
        raise KeyError(f"persona {persona.name!r}: unknown agent kind {persona.agent.kind!r}")
    agent = builder(persona.agent.options)
    if isinstance(agent, PersonaBound):
        agent.bind(persona, mcp=mcp)
    return agent
