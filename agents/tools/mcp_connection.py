"""Connections to the configured Model Context Protocol servers, one per server per process.

Guarantees:

- **Lazy and reused.** A server is connected on first use (the first turn of a persona that
  grants its tools), with the official ``mcp`` client, and the connection serves every later
  turn of every persona, across persona reloads. Its tool listing is read once per
  connection.
- **Reconnected after a death.** A stdio child that exits, or a transport that fails, marks
  the connection dead (the end of the server's message stream is watched, and a call that
  fails on the transport says so too); the next use starts a new one. A connection attempt
  is bounded by the server's ``connect_timeout_seconds``.
- **Closed on shutdown.** :meth:`McpConnection.aclose` ends the connection (a stdio child
  gets its stdin closed, then SIGTERM, then SIGKILL — the SDK's bounded sequence);
  :class:`agents.tools.mcp_servers.McpServers` calls it for each, after the worker stopped
  (gateway/app.py).
- **Secrets stay in the transport.** A stdio child gets only the environment its block
  names (plus the SDK's minimal PATH/HOME/USER set), an HTTP server's headers go only to its
  URL, and no log line here carries either: failures are logged by server name and
  exception type.
- **SSRF.** An ``http`` server's connections go through a network backend that resolves the
  host itself and refuses to connect if any address it leads to is one
  :mod:`gateway.netguard` refuses (judged where the socket is opened, so a DNS answer that
  changed since the file was read is judged too), unless its block says
  ``allow_private: true``; no proxy is taken from the environment.

Each connection is owned by one task, because the SDK's transports are structured (anyio
task groups) and must be entered and left in the same task; other tasks only send requests
through the connected :class:`mcp.Client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import anyio
import httpcore2
import httpx2
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client._transport import ReadStream, TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp_types import Implementation, Tool

from gateway.mcp_config import McpHttpServer, McpServerConfig, McpStdioServer
from gateway.netguard import TargetRefusedError, literal_address, refusal_reason
from gateway.observability import get_logger

__all__ = ["McpConnection", "McpUnavailableError"]

log = get_logger(__name__)

_CLIENT_INFO = Implementation(name="flowbiz-gateway", version="1")
# The SDK's own shutdown is bounded (about 6.5 s for a stdio child that ignores SIGTERM).
_CLOSE_SECONDS = 10.0
# Pages of a tool listing read at most: a server that pages for ever cannot hold a turn.
_LIST_PAGES = 20


@dataclass(frozen=True, slots=True)
class _Owner:
    """The task holding one connection, the signal that ends it, and its handshake's end."""

    task: asyncio.Task[None]
    stop: asyncio.Event
    ready: asyncio.Future[Client]


class McpUnavailableError(Exception):
    """The server could not be reached, or its connection ended; the text names no secret."""


class _WatchedReadStream:
    """The server's message stream, telling its connection when it ends (the server died)."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], on_end: Any) -> None:
        self._inner = inner
        self._on_end = on_end

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


async def _checked_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` leads to, or TargetRefusedError if the guard refuses any."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        reason = refusal_reason(ipaddress.ip_address(address.split("%", 1)[0]))
        if reason is not None:
            raise TargetRefusedError(f"the MCP server's host leads to a {reason} address")
    return addresses


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Connects only to addresses the SSRF guard allows, judged on the answer it connects to
    (so a DNS answer that changed since the configuration was read is judged too)."""

    def __init__(self) -> None:
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await _checked_addresses(host, port)
        # TLS still names the host (httpcore2 sends SNI from the request, not from here).
        return await self._inner.connect_tcp(
            addresses[0],
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise TargetRefusedError("the MCP server must be reached over TCP")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _http_transport(allow_private: bool) -> httpx2.AsyncHTTPTransport:
    # No proxy from the environment: the guard judges the address we really connect to.
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    if not allow_private:
        # httpx2 takes no network backend; its pool does, and reads it on every connection.
        pool = transport._pool
        if not hasattr(pool, "_network_backend"):  # fail closed if httpx2 changed shape
            raise RuntimeError("cannot guard this httpx2 release's connections")
        pool._network_backend = _GuardedBackend()
    return transport


class McpConnection:
    """One configured server: connected on demand, reconnected after it died."""

    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        self._client: Client | None = None
        self._owner: _Owner | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()  # connections given up mid-connect
        self._tools: tuple[Tool, ...] | None = None
        self._alive = False
        self._generation = 0  # of the current owner: a late signal of an old one is ignored
        self.connections = 0  # how many times a connection was made (the tests read it)

    @property
    def alive(self) -> bool:
        """Connected, and the server's message stream has not ended."""
        return self._alive

    # -- the connection ----------------------------------------------------------------------
    async def client(self) -> Client:
        """The live client, connecting first if there is none (or it died)."""
        if self._alive and self._client is not None:
            return self._client
        async with self._lock:
            if self._alive and self._client is not None:
                return self._client
            await self._end_owner()
            return await self._connect()

    async def _connect(self) -> Client:
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        self._generation += 1
        owner = asyncio.create_task(
            self._own(ready, stop, self._generation), name=f"mcp-{self.name}"
        )
        self._owner = _Owner(task=owner, stop=stop, ready=ready)
        try:
            async with asyncio.timeout(self.config.connect_timeout_seconds):
                client = await asyncio.shield(ready)
        except asyncio.CancelledError:
            # The turn was given up (its timeout): it must not wait for the child to stop.
            self._finish_later(self._detach())
            raise
        except Exception as exc:  # noqa: BLE001 - each failure becomes the reason logged below
            await self._finish(self._detach())
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self.config.connect_timeout_seconds:g} s"
            elif (refused := _refused_within(exc)) is not None:
                reason = str(refused)
            else:
                reason = f"connection failed ({type(exc).__name__})"
            log.warning("mcp.connect_failed", server=self.name, reason=reason)
            raise McpUnavailableError(reason) from None
        self._client, self._tools, self._alive = client, None, True
        self.connections += 1
        log.info("mcp.connected", server=self.name, transport=self.config.transport)
        return client

    async def _own(
        self, ready: asyncio.Future[Client], stop: asyncio.Event, generation: int
    ) -> None:
        """Hold the connection open until told to stop; the SDK needs one task for both ends."""
        try:
            async with (
                self._transport(generation) as streams,
                Client(_StreamsTransport(streams), client_info=_CLIENT_INFO) as client,
            ):
                if not ready.done():
                    ready.set_result(client)
                await stop.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - whatever ended it, the connection is over
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("mcp.connection_ended", server=self.name, error_type=type(exc).__name__)
        finally:
            self._ended(generation)

    @asynccontextmanager
    async def _transport(self, generation: int) -> AsyncIterator[TransportStreams]:
        config = self.config

        def ended() -> None:
            self._ended(generation)

        if isinstance(config, McpStdioServer):
            params = StdioServerParameters(
                command=config.command,
                args=list(config.args),
                env={k: v.get_secret_value() for k, v in config.env.items()},
                cwd=config.cwd,
            )
            with _stderr_for(config) as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write):
                    yield _WatchedReadStream(read, ended), write
            return
        assert isinstance(config, McpHttpServer)
        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        timeout = httpx2.Timeout(config.connect_timeout_seconds, read=config.call_timeout_seconds)
        async with (
            httpx2.AsyncClient(
                headers=headers,
                timeout=timeout,
                transport=_http_transport(config.allow_private),
                trust_env=False,
            ) as http,
            streamable_http_client(config.url, http_client=http) as (read, write),
        ):
            yield _WatchedReadStream(read, ended), write

    def _ended(self, generation: int) -> None:
        if generation != self._generation:
            return
        if self._alive:
            log.warning("mcp.server_gone", server=self.name)
        self._alive = False

    def mark_dead(self) -> None:
        """A call failed on the transport: the next use reconnects."""
        self._ended(self._generation)

    def _detach(self) -> _Owner | None:
        """Forget the current connection; its owner, for ending it."""
        owner, self._owner = self._owner, None
        self._client, self._tools, self._alive = None, None, False
        return owner

    async def _finish(self, owner: _Owner | None) -> None:
        if owner is None:
            return
        owner.stop.set()
        ready = owner.ready
        connected = ready.done() and not ready.cancelled() and ready.exception() is None
        # A connected owner leaves the SDK's contexts when told to stop; one still in the
        # handshake is only waiting for the server, so it is cancelled (the SDK still stops
        # a stdio child, shielded from the cancellation).
        done, _ = await asyncio.wait({owner.task}, timeout=_CLOSE_SECONDS if connected else 0)
        if not done:
            owner.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await owner.task

    def _finish_later(self, owner: _Owner | None) -> None:
        task = asyncio.create_task(self._finish(owner), name=f"mcp-{self.name}-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _end_owner(self) -> None:
        await self._finish(self._detach())

    async def aclose(self) -> None:
        async with self._lock:
            await self._end_owner()
        if self._closing:
            await asyncio.gather(*self._closing)

    # -- what the server offers --------------------------------------------------------------
    async def tools(self) -> tuple[Tool, ...]:
        """The server's tools (at most ``max_tools``), listed once per connection."""
        client = await self.client()
        if self._tools is not None:
            return self._tools
        found: list[Tool] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.config.connect_timeout_seconds):
                for _ in range(_LIST_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    found += page.tools
                    cursor = page.next_cursor
                    if cursor is None or len(found) >= self.config.max_tools:
                        break
        except Exception as exc:  # noqa: BLE001 - a listing that fails is a server that fails
            self.mark_dead()
            log.warning("mcp.list_failed", server=self.name, error_type=type(exc).__name__)
            raise McpUnavailableError(f"listing its tools failed ({type(exc).__name__})") from None
        if len(found) > self.config.max_tools:
            log.warning("mcp.tools_cut", server=self.name, listed=len(found))
        self._tools = tuple(found[: self.config.max_tools])
        return self._tools


def _refused_within(exc: BaseException) -> TargetRefusedError | None:
    """The guard's refusal behind a failure, however the SDK and httpx2 wrapped it."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TargetRefusedError):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return None


class _StreamsTransport:
    """Already-open streams, as the ``Transport`` a :class:`mcp.Client` enters."""

    def __init__(self, streams: TransportStreams) -> None:
        self._streams = streams

    async def __aenter__(self) -> TransportStreams:
        return self._streams

    async def __aexit__(self, *exc: object) -> None:
        return None


@contextlib.contextmanager
def _stderr_for(config: McpStdioServer) -> Any:
    if config.stderr == "inherit":
        yield sys.stderr
        return
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        sink: IO[str] = devnull
        yield sink
