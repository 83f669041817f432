"""Agent kinds by name, and building the agent a persona declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.base import Agent
from agents.echo import EchoAgent
from agents.persona import Persona
from agents.rules import RulesAgent

__all__ = ["AGENT_KINDS", "build_agent"]

AgentBuilder = Callable[[dict[str, Any]], Agent]

AGENT_KINDS: dict[str, AgentBuilder] = {
    "rules": RulesAgent.from_options,
    "echo": EchoAgent.from_options,
}


def build_agent(persona: Persona) -> Agent:
    builder = AGENT_KINDS.get(persona.agent.kind)
    if builder is None:
        raise KeyError(f"persona {persona.name!r}: unknown agent kind {persona.agent.kind!r}")
    return builder(persona.agent.options)
