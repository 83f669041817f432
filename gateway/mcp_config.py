"""The ``mcp_servers:`` block of gateway.yaml: the Model Context Protocol servers the gateway
may connect to, by name.

Guarantees: a server is either ``stdio`` (a command the gateway starts, with an argv and no
shell) or ``http`` (a streamable-HTTP URL). Every value given to a server that could be a
credential — a stdio child's environment, an HTTP server's headers — is written as
``env:NAME`` and read from the gateway's environment (:data:`gateway.secret_ref.Secret`), so
the file holds no secret and a ``repr`` of the block shows none. An ``http`` URL is held to
the SSRF guard (:mod:`gateway.netguard`) when the file is read and again where the
connection is made, unless ``allow_private: true`` stands beside it. Every server has a
bounded connect time, call time, result size and tool count. A server name is the first half
of the tool names personas grant (``mcp:<server>/<tool>``): lowercase letters, digits and
dashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.netguard import check_url
from gateway.secret_ref import Secret

__all__ = ["MCP_SERVER_NAME", "McpHttpServer", "McpServerConfig", "McpStdioServer"]

# No underscore: the model-facing tool name is mcp__<server>__<tool>, split at the first "__".
MCP_SERVER_NAME = r"^[a-z0-9][a-z0-9-]{0,31}$"


class _McpServer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_timeout_seconds: float = Field(default=10, gt=0, le=120)
    call_timeout_seconds: float = Field(default=20, gt=0, le=600)
    max_result_chars: int = Field(default=8000, ge=100, le=1_000_000)
    max_tools: int = Field(default=64, ge=1, le=512)


class McpStdioServer(_McpServer):
    """A server the gateway runs as a child process, speaking MCP on its stdin and stdout."""

    transport: Literal["stdio"]
    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    # Only these and a minimal PATH/HOME/USER set reach the child; never the gateway's own.
    env: dict[str, Secret] = Field(default_factory=dict)
    cwd: Path | None = None
    # The child's stderr: discarded, or mixed into the gateway's own (which carries JSON logs).
    stderr: Literal["discard", "inherit"] = "discard"


class McpHttpServer(_McpServer):
    """A server reached over streamable HTTP."""

    transport: Literal["http"]
    url: str
    headers: dict[str, Secret] = Field(default_factory=dict)
    allow_private: bool = False  # SSRF guard (gateway.netguard) off for this URL

    @model_validator(mode="after")
    def _guarded(self) -> McpHttpServer:
        check_url(self.url, allow_private=self.allow_private, field="MCP server url")
        return self


McpServerConfig = Annotated[McpStdioServer | McpHttpServer, Field(discriminator="transport")]
