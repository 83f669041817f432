"""Model Context Protocol tools as an LLM persona's tools, under the built-ins' rules.

A persona grants MCP tools in its ``tools`` list by qualified name — ``mcp:<server>/<tool>``
for one tool, ``mcp:<server>/*`` for every tool the server lists — where ``<server>`` is a
name in gateway.yaml's ``mcp_servers:`` (gateway/mcp_config.py). What this module guarantees:

- **Deny-first.** Only tools a grant covers become :class:`McpTool` objects, and only those
  are offered to the model, under the name ``mcp__<server>__<tool>``; the LLM agent refuses
  a call to any other name (agents/llm.py), so neither another tool of a granted server nor
  a server the persona did not grant can be reached. A grant naming a server that is not
  configured fails the persona at load, like an unknown built-in tool.
- **Arguments are checked before the server sees them.** A tool is offered only if its
  ``inputSchema`` is a valid JSON schema (Draft 2020-12, ``jsonschema``) of an object; the
  LLM agent validates every call's arguments against it and refuses a call that breaks it.
- **Bounded.** A call waits at most the server's ``call_timeout_seconds``; its text is cut to
  ``max_result_chars`` (the model is told how much was cut); descriptions to
  :data:`DESCRIPTION_CHARS`; a server's listing to ``max_tools``.
- **Failures are answers, not crashes.** A server that cannot be reached, dies, times out,
  refuses the call or reports a tool error gives the model a tool error to recover from; a
  server unreachable when the turn starts only leaves its tools out of that turn.
- **Audited.** With an audit stream (the worker's turns), each call writes
  ``tool.mcp.call`` before it is sent — and is not sent if that write fails — and
  ``tool.mcp.finished`` with its outcome; arguments appear by name only, never by value.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from mcp import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, Tool

from agents.persona import McpGrant, Persona
from agents.tools.audit import audit_tool
from agents.tools.base import ToolContext, ToolResult
from agents.tools.mcp_connection import McpConnection, McpUnavailableError
from agents.tools.mcp_servers import McpServers
from gateway.observability import get_logger

__all__ = ["DESCRIPTION_CHARS", "McpTool", "McpToolset", "model_tool_name"]

log = get_logger(__name__)

DESCRIPTION_CHARS = 1024
# What chat-completions APIs accept as a function name.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MESSAGE_CHARS = 300  # of a server's error message, shown to the model


def model_tool_name(server: str, tool: str) -> str:
    """The name the model sees; server names carry no underscore, so it splits one way."""
    return f"mcp__{server}__{tool}"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[cut: {len(text) - limit} more characters]"


def _result_text(result: CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        text = getattr(block, "text", None)
        kind = getattr(block, "type", "content")
        parts.append(text if isinstance(text, str) else f"[{kind} omitted]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts)


@dataclass(slots=True)  # not frozen: the Tool protocol's attributes are plain ones
class McpTool:
    """One granted tool of one server, in the shape of the built-in tools."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    server: str
    remote_name: str
    connection: McpConnection

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        """Call the tool; ``arguments`` were validated against ``parameters`` by the agent."""
        recorded = await audit_tool(
            context, "tool.mcp.call", self.name, server=self.server, arguments=sorted(arguments)
        )
        if context.agent.audit is not None and not recorded:
            return ToolResult(content="Refused: the call could not be recorded.", is_error=True)
        started = time.perf_counter()
        result, outcome = await self._call(arguments)
        took_ms = round((time.perf_counter() - started) * 1000)
        log.info("mcp.tool_finished", server=self.server, tool=self.remote_name, outcome=outcome)
        await audit_tool(
            context,
            "tool.mcp.finished",
            self.name,
            server=self.server,
            outcome=outcome,
            duration_ms=took_ms,
        )
        return result

    async def _call(self, arguments: Mapping[str, Any]) -> tuple[ToolResult, str]:
        config = self.connection.config
        try:
            client = await self.connection.client()
        except McpUnavailableError as exc:
            return _error(f"the tool's server is unavailable: {exc}"), "unavailable"
        limit = config.call_timeout_seconds
        timed_out = _error(f"the tool did not answer within {limit:g} s"), "timeout"
        try:
            # The SDK's own timeout answers first; this one holds if it did not.
            async with asyncio.timeout(limit + 1):
                result = await client.call_tool(
                    self.remote_name, dict(arguments), read_timeout_seconds=limit
                )
        except TimeoutError:
            return timed_out
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                return timed_out
            if exc.code == CONNECTION_CLOSED:
                self.connection.mark_dead()
                return _error("the tool's server went away; try again later"), "unavailable"
            message = _cut(exc.message, _MESSAGE_CHARS)
            return _error(f"the tool's server refused the call: {message}"), "refused"
        except Exception as exc:  # noqa: BLE001 - a transport failure must reach the model as one
            self.connection.mark_dead()
            log.warning("mcp.call_failed", server=self.server, error_type=type(exc).__name__)
            return _error("the tool's server could not be reached; try again later"), "unavailable"
        text = _cut(_result_text(result), config.max_result_chars)
        if result.is_error:
            return _error(f"the tool failed: {text}"), "tool_error"
        return ToolResult(content=text), "ok"


def _error(text: str) -> ToolResult:
    return ToolResult(content=text, is_error=True)


class McpToolset:
    """The MCP tools one persona was granted, read from its servers' current listings."""

    def __init__(self, persona: Persona, servers: McpServers | None) -> None:
        self.persona = persona.name
        self._grants = persona.mcp_grants
        missing = sorted(
            {g.server for g in self._grants if servers is None or g.server not in servers}
        )
        if missing:
            raise KeyError(f"persona {persona.name!r}: MCP servers not configured: {missing}")
        self._servers = servers
        # Per server: the listing the tools were made from, and the granted tools.
        self._made: dict[str, tuple[tuple[Tool, ...], dict[str, McpTool]]] = {}

    def __bool__(self) -> bool:
        return bool(self._grants)

    async def tools(self) -> dict[str, McpTool]:
        """Every granted tool of every reachable granted server, by the name the model sees."""
        if self._servers is None or not self._grants:
            return {}
        names = sorted({g.server for g in self._grants})
        found = await asyncio.gather(*(self._server_tools(n) for n in names))
        return {name: tool for tools in found for name, tool in tools.items()}

    async def _server_tools(self, server: str) -> dict[str, McpTool]:
        assert self._servers is not None
        connection = self._servers.get(server)
        assert connection is not None  # checked at load
        try:
            listed = await connection.tools()
        except McpUnavailableError as exc:
            log.warning(
                "agent.mcp_unavailable", persona=self.persona, server=server, reason=str(exc)
            )
            return {}
        made = self._made.get(server)
        if made is None or made[0] is not listed:
            made = (listed, self._granted(connection, listed))
            self._made[server] = made
        return made[1]

    def _granted(self, connection: McpConnection, listed: tuple[Tool, ...]) -> dict[str, McpTool]:
        server = connection.name
        grants: tuple[McpGrant, ...] = tuple(g for g in self._grants if g.server == server)
        tools: dict[str, McpTool] = {}
        for tool in listed:
            if not any(g.covers(server, tool.name) for g in grants):
                continue  # deny-first: what no grant covers is never offered
            name = model_tool_name(server, tool.name)
            schema = tool.input_schema
            why = None
            if not _MODEL_NAME.match(name):
                why = "name"
            elif not isinstance(schema, dict) or schema.get("type") != "object":
                why = "schema_not_an_object"
            else:
                try:
                    Draft202012Validator.check_schema(schema)
                except SchemaError:
                    why = "schema_invalid"
            if why is not None:
                log.warning("mcp.tool_skipped", server=server, tool=tool.name[:128], reason=why)
                continue
            tools[name] = McpTool(
                name=name,
                description=(tool.description or tool.title or tool.name)[:DESCRIPTION_CHARS],
                parameters=schema,
                server=server,
                remote_name=tool.name,
                connection=connection,
            )
        return tools
