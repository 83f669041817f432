"""``McpServers``: the configured Model Context Protocol servers of one process, by name.

Guarantee: nothing is connected, and the ``mcp`` SDK is not even imported, until a persona
granting a server's tools takes a turn (:meth:`McpServers.get`); a process, or a
``flowbiz`` command, with no such persona never loads it. Each server has at most one
connection (:class:`agents.tools.mcp_connection.McpConnection`), made on first ``get``,
and :meth:`McpServers.aclose` ends every one made (gateway/app.py, after the worker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.mcp_config import McpServerConfig

if TYPE_CHECKING:
    from agents.tools.mcp_connection import McpConnection

__all__ = ["McpServers"]


class McpServers:
    """Every configured server's connection, by name; one per process (gateway/app.py)."""

    def __init__(self, configs: Mapping[str, McpServerConfig]) -> None:
        self._configs = dict(configs)
        self._connections: dict[str, McpConnection] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._configs

    def get(self, name: str) -> McpConnection | None:
        found = self._connections.get(name)
        if found is None and name in self._configs:
            from agents.tools.mcp_connection import McpConnection

            found = self._connections[name] = McpConnection(name, self._configs[name])
        return found

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._connections.values()))
