"""Personas: declared bots, one YAML file each in a personas folder.

A persona has a name, how it presents itself (display name, icon, signature), prompt
templates with explicit versions (the latest unless pinned), the tools it may use (nothing
unless listed; a Model Context Protocol server's tools as ``mcp:<server>/<tool>`` or all of
one server's as ``mcp:<server>/*``, see :class:`McpGrant`), the agent that answers for it,
and who may reach it (``access``: tenants, channels, internal channels only — see
gateway/reach.py). A persona with a tool that acts on
the host (:data:`HOST_TOOLS`) is internal-only unless its file says ``internal_only: false``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import ConfigError
from gateway.models import PersonaPresentation

__all__ = [
    "HOST_TOOLS",
    "MCP_PREFIX",
    "AgentSpec",
    "McpGrant",
    "Persona",
    "PersonaAccess",
    "PersonaRegistry",
    "PromptTemplate",
    "load_personas",
]

# Tools that act on the host the gateway runs on; agents/tools marks the same ones.
HOST_TOOLS = frozenset({"run_command"})
_CHANNEL_KINDS = frozenset({"http", "slack", "line", "whatsapp", "email"})
MCP_PREFIX = "mcp:"
# The server's name as gateway/mcp_config.py allows it; a tool name as MCP allows it, or "*".
_MCP_GRANT = re.compile(r"^mcp:([a-z0-9][a-z0-9-]{0,31})/([A-Za-z0-9_.-]{1,128}|\*)$")


@dataclass(frozen=True, slots=True)
class McpGrant:
    """A persona's grant of one MCP server's tool, or (``tool`` None) of all its tools."""

    server: str
    tool: str | None

    @classmethod
    def parse(cls, entry: str) -> McpGrant | None:
        """The grant an ``mcp:`` entry of ``tools`` spells; None for a built-in tool's name.

        Raises ValueError for an ``mcp:`` entry that is not ``mcp:<server>/<tool|*>``.
        """
        if not entry.startswith(MCP_PREFIX):
            return None
        match = _MCP_GRANT.match(entry)
        if match is None:
            raise ValueError(
                f"{entry!r}: an MCP grant is mcp:<server>/<tool> or mcp:<server>/* "
                "(server: lowercase letters, digits, dashes)"
            )
        server, tool = match.groups()
        return cls(server=server, tool=None if tool == "*" else tool)

    def covers(self, server: str, tool: str) -> bool:
        return server == self.server and (self.tool is None or self.tool == tool)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PromptTemplate(_Model):
    """Versioned text; ``$variables`` are filled in at render time."""

    versions: dict[int, str] = Field(
        description="The text of each version (`$variables` are filled in when rendered)."
    )
    pin: int | None = Field(default=None, description="The version used; null: the latest.")

    @field_validator("versions")
    @classmethod
    def _not_empty(cls, value: dict[int, str]) -> dict[int, str]:
        if not value:
            raise ValueError("a prompt needs at least one version")
        return value

    @property
    def version(self) -> int:
        return self.pin if self.pin is not None else max(self.versions)

    def render(self, variables: Mapping[str, str], *, version: int | None = None) -> str:
        chosen = self.version if version is None else version
        if chosen not in self.versions:
            raise KeyError(f"prompt version {chosen} does not exist")
        return string.Template(self.versions[chosen]).safe_substitute(variables)


class AgentSpec(_Model):
    """The agent that answers for a persona (agents/registry.py builds it)."""

    kind: str = Field(default="rules", description="`rules`, `echo`, `webhook` or `llm`.")
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="The limit for one answer, then `failure_reply`; null: "
        "`pipeline.agent_timeout_seconds`.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="The kind's own options (see below)."
    )


class PersonaAccess(_Model):
    """Who may reach a persona. Every given condition must hold; empty means no limit.

    ``channels`` entries are a channel kind (``slack``) or a kind and the platform's address
    of one channel (``slack:C0OPS``, ``line:U…`` the bot's destination, ``whatsapp:+1555…``
    our number, ``email:ops@acme.example`` our address).
    """

    tenants: tuple[str, ...] = Field(default=(), description="Only these tenants; empty: all.")
    channels: tuple[str, ...] = Field(
        default=(),
        description="Only these channel kinds (`slack`) or channels (`slack:C0OPS`, "
        "`email:ops@acme.example`); empty: all.",
    )
    internal_only: bool | None = Field(
        default=None,
        description="Answer only on channels marked internal; null: exactly when the persona "
        "has a host tool.",
    )

    @field_validator("channels")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            kind, _, address = entry.partition(":")
            if kind not in _CHANNEL_KINDS:
                raise ValueError(
                    f"{entry!r}: the channel kind must be one of {sorted(_CHANNEL_KINDS)}"
                )
            if _ and not address:
                raise ValueError(f"{entry!r}: give an address after the colon, or none")
        return value


class Persona(_Model):
    """One persona file (``*.yaml`` in ``personas_dir``)."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="What routing and `/persona name` call it; unique.",
    )
    display_name: str = Field(description="The name customers see.")
    description: str = Field(default="", description="What it is for, for people.")
    signature: str = Field(default="", description="Signs its replies where the channel shows it.")
    icon_url: str | None = Field(default=None, description="Its picture where shown.")
    prompts: dict[str, PromptTemplate] = Field(
        default_factory=dict,
        description="Versioned prompt texts by name (`system`, `quota_notice`, …).",
    )
    tools: tuple[str, ...] = Field(
        default=(), description="Deny-first: a tool not listed here is never offered."
    )
    agent: AgentSpec = Field(default=AgentSpec(), description="The agent that answers.")
    welcome: str | None = Field(
        default=None,
        description="The answer when someone follows or adds the bot (LINE follow, join); "
        "null: no answer.",
    )
    failure_reply: str = Field(
        default="Sorry, I could not answer that just now. Please try again shortly.",
        description="Sent when the agent fails or times out.",
    )
    refusal: str = Field(
        default=(
            "For your safety I cannot accept card numbers, passwords or keys in this chat. "
            "Please remove them and write again."
        ),
        description="Sent instead of an answer when the safety pre-check blocks a message.",
    )
    knowledge_dir: Path | None = Field(
        default=None,
        description="Files its tools may search (search_docs); relative to the persona file.",
    )
    access: PersonaAccess = Field(default=PersonaAccess(), description="Who may reach it.")
    typing: bool = Field(
        default=True,
        description="Show the platform's typing or working indicator while its agent "
        "answers, where the channel has one (Slack assistant status, LINE loading "
        "animation, WhatsApp typing); a failed indicator never delays the reply.",
    )

    @field_validator("tools")
    @classmethod
    def _grants_spelled_right(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            McpGrant.parse(entry)
        return value

    @property
    def builtin_tools(self) -> tuple[str, ...]:
        """The built-in tools listed (agents/tools), without the MCP grants."""
        return tuple(t for t in self.tools if not t.startswith(MCP_PREFIX))

    @property
    def mcp_grants(self) -> tuple[McpGrant, ...]:
        return tuple(g for g in map(McpGrant.parse, self.tools) if g is not None)

    @property
    def host_tools(self) -> tuple[str, ...]:
        return tuple(t for t in self.tools if t in HOST_TOOLS)

    @property
    def internal_only(self) -> bool:
        """Reachable only from channels a tenant marked internal."""
        if self.access.internal_only is not None:
            return self.access.internal_only
        return bool(self.host_tools)

    @property
    def presentation(self) -> PersonaPresentation:
        return PersonaPresentation(
            name=self.name,
            display_name=self.display_name,
            signature=self.signature,
            icon_url=self.icon_url,
        )

    def allows_tool(self, tool: str) -> bool:
        return tool in self.tools


class PersonaRegistry(Mapping[str, Persona]):
    """The loaded personas by name; replaced whole on reload."""

    def __init__(self, personas: Mapping[str, Persona], *, source: Path | None = None) -> None:
        self._personas = dict(personas)
        self.source = source

    def __getitem__(self, name: str) -> Persona:
        return self._personas[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._personas)

    def __len__(self) -> int:
        return len(self._personas)


def load_personas(folder: Path) -> PersonaRegistry:
    """Load every ``*.yaml`` in ``folder``; raise ConfigError listing every problem."""
    problems: list[tuple[str, str]] = []
    personas: dict[str, Persona] = {}
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not files:
        problems.append((str(folder), "no persona files (*.yaml) found"))
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
            persona = Persona.model_validate(data)
        except yaml.YAMLError as exc:
            problems.append((file.name, f"not valid YAML: {exc}"))
            continue
        except ValidationError as exc:
            problems += [
                (f"{file.name}:" + ".".join(str(p) for p in e["loc"]), e["msg"])
                for e in exc.errors()
            ]
            continue
        if persona.knowledge_dir is not None and not persona.knowledge_dir.is_absolute():
            persona = persona.model_copy(update={"knowledge_dir": folder / persona.knowledge_dir})
        if persona.name in personas:
            problems.append((f"{file.name}:name", f"duplicate persona {persona.name!r}"))
        personas[persona.name] = persona
    if problems:
        raise ConfigError(problems)
    return PersonaRegistry(personas, source=folder)
