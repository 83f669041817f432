"""A small MCP server for the tests, run as a child process over stdio (or, with
``http PORT``, over streamable HTTP on loopback behind a bearer token): an order look-up, a
tool that never answers, one that kills the server, one that answers with a huge text, and
one that fails.

Every call is appended as one JSON line to the file named by ``MCP_CALL_LOG`` before the
tool does anything, so a test can prove which calls reached the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

server = MCPServer("orders")


def _record(tool: str, arguments: dict[str, object]) -> None:
    path = os.environ.get("MCP_CALL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"tool": tool, "arguments": arguments, "pid": os.getpid()}) + "\n")


@server.tool(description="Look up an order by its id (ORD- and four digits).")
def lookup_order(order_id: Annotated[str, Field(pattern=r"^ORD-[0-9]{4}$")]) -> str:
    _record("lookup_order", {"order_id": order_id})
    region = os.environ.get("ORDERS_REGION", "?")
    return f"order {order_id}: shipped, arriving Friday (server {region})"


@server.tool(description="Wait for ever.")
async def hang() -> str:
    _record("hang", {})
    await asyncio.sleep(3600)
    return "never"


@server.tool(description="Stop the server process at once.")
def crash() -> str:
    _record("crash", {})
    os._exit(3)


@server.tool(description="Answer with `size` characters.")
def huge(size: Annotated[int, Field(ge=1, le=10_000_000)]) -> str:
    _record("huge", {"size": size})
    return "x" * size


@server.tool(description="Always fails.")
def broken() -> str:
    _record("broken", {})
    raise RuntimeError("the database is down")


def _http_app(token: str) -> Any:
    """The streamable-HTTP app, answering 401 to a request without ``Bearer <token>``."""
    app = server.streamable_http_app(host="127.0.0.1")
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})
            return
        await app(scope, receive, send)

    return guarded


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        import uvicorn

        app = _http_app(os.environ["MCP_HTTP_TOKEN"])
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        server.run()
