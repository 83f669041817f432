"""A loopback proxy in front of a real redis-server that cuts, holds or delays chosen requests.

A request is matched by the bytes it carries (a script's SHA, a key): every marker of a
:class:`Rule` must be in the chunk the client wrote. Replies on one connection keep their
order, so holding a request holds its answer, and cutting it fails it (the client sees the
connection drop); every other connection flows freely meanwhile. The fault tests use it to
force, deterministically, interleavings that a loaded machine produces only now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["RedisFaultProxy", "Rule", "script_id"]


def script_id(script: str) -> bytes:
    """The id redis-server knows a Lua script by (what EVALSHA sends)."""
    return hashlib.sha1(script.encode()).hexdigest().encode()  # noqa: S324 - redis' script id


@dataclass
class Rule:
    """What the proxy does with a request that carries every one of ``markers``.

    ``cut``: drop the request and close the connection; ``hold``: until :meth:`release`;
    ``delay``: ``delay`` seconds. ``once``: only the first matching request, later ones pass.
    """

    markers: tuple[bytes, ...]
    action: Literal["cut", "hold", "delay"]
    delay: float = 0.0
    once: bool = False
    active: bool = True
    seen: int = 0
    matched: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first match
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


class RedisFaultProxy:
    """Forwards to redis-server on ``upstream_port``, applying ``rules`` to each request."""

    def __init__(self, upstream_port: int, rules: list[Rule]) -> None:
        self.upstream_port = upstream_port
        self.rules = rules
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> RedisFaultProxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for rule in self.rules:
            rule.release()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        # Each connection's handler closes its two sockets once its pipes are done.
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, requests=True)),
            asyncio.create_task(self._pipe(up_reader, writer, requests=False)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, requests: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                for rule in self.rules if requests else ():
                    if not rule.active or not all(marker in chunk for marker in rule.markers):
                        continue
                    if rule.once and rule.seen:
                        continue
                    rule.seen += 1
                    rule.matched.set()
                    if rule.action == "cut":
                        return  # the connection closes; the request never reaches Redis
                    if rule.action == "hold":
                        await rule.released.wait()
                    else:
                        await asyncio.sleep(rule.delay)
                sink.write(chunk)
                await sink.drain()
