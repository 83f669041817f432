"""A loopback TCP proxy whose faults are switched at run time: the network between the
gateway and Redis, or between the gateway and a platform, misbehaving on demand.

Every connection accepted on the proxy's port opens one to the upstream port and bytes
flow both ways, each direction through its own reader and writer so that added latency
delays every chunk by the same amount without slowing the flow down. The faults, each
switched on by a method and off by :meth:`TcpFaultProxy.heal`:

- :meth:`~TcpFaultProxy.latency`: every chunk is held ``up`` seconds on its way to the
  upstream and ``down`` seconds on its way back.
- :meth:`~TcpFaultProxy.drop_reply_after`: the next connection whose reply passes ``after``
  bytes is cut there, mid-reply, with a reset on both sides (the upstream has handled the
  request; the client has part of the answer).
- :meth:`~TcpFaultProxy.blackhole`: a peer that accepts, reads everything and never answers
  nor closes; connections opened meanwhile are accepted and treated the same. Healing
  resets each connection that lost bytes so: TCP never drops the middle of a stream and
  carries on, so no client has to make sense of replies with requests missing before them
  (on one connection that pipelines, they would answer the wrong requests).
- :meth:`~TcpFaultProxy.half_open`: the far side stops: nothing is read or forwarded either
  way and nothing is closed, so a client sees neither an answer nor a FIN, and once its
  socket buffers fill its writes block too. Healing lets what was held flow on, as TCP does
  after a partition.
- :meth:`~TcpFaultProxy.reset`: every open connection is reset now (RST, not FIN).
- :meth:`~TcpFaultProxy.refuse`: the port stops listening, so a connect is refused and the
  client knows nothing was sent; :meth:`~TcpFaultProxy.heal` listens on the same port again.

Subclasses can look at each request chunk before it goes upstream (:meth:`inspect_request`),
which is how :mod:`tests.faults.redis_proxy` matches Redis commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["TcpFaultProxy"]

Direction = Literal["up", "down"]
_CHUNK = 65536
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side, the upstream's, the four tasks moving bytes."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    reply_bytes: int = 0  # forwarded downstream since the last drop_reply_after
    swallowed: bool = False  # lost bytes to the black hole: reset when it heals
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class TcpFaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``, with faults."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0  # accepted, in all
        self.cut_replies = 0  # connections cut by drop_reply_after
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._delay: dict[Direction, float] = {"up": 0.0, "down": 0.0}
        self._blackhole = False
        self._flowing = asyncio.Event()  # cleared while half-open
        self._flowing.set()
        self._drop_after: int | None = None

    # -- where it listens ----------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.address}"

    async def start(self) -> TcpFaultProxy:
        await self._listen()
        return self

    async def stop(self) -> None:
        await self._close_listener()
        self._flowing.set()
        for link in list(self._links):
            self._close(link, reset=False)
        # Not cancelled: asyncio reports a cancelled connection handler as an error.
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- the faults ----------------------------------------------------------------------------
    def latency(self, *, up: float = 0.0, down: float = 0.0) -> None:
        """Hold every chunk ``up`` s towards the upstream and ``down`` s back."""
        self._delay = {"up": up, "down": down}

    def drop_reply_after(self, after: int) -> None:
        """Cut the next connection whose reply, counted from now, passes ``after`` bytes."""
        for link in self._links:
            link.reply_bytes = 0
        self._drop_after = after

    def blackhole(self) -> None:
        """Read everything, answer nothing, close nothing."""
        self._blackhole = True

    def half_open(self) -> None:
        """Stop reading and forwarding either way; keep every socket open."""
        self._flowing.clear()

    def reset(self) -> None:
        """Reset every open connection now."""
        for link in list(self._links):
            self._close(link, reset=True)

    async def refuse(self) -> None:
        """Stop listening (connects are refused) and reset every open connection."""
        await self._close_listener()
        self.reset()

    async def heal(self) -> None:
        """Every fault off; listening again if :meth:`refuse` stopped it."""
        self._delay = {"up": 0.0, "down": 0.0}
        self._blackhole = False
        for link in [link for link in self._links if link.swallowed]:
            self._close(link, reset=True)
        self._drop_after = None
        self._flowing.set()
        if self._server is None:
            await self._listen()

    # -- what subclasses may refine ------------------------------------------------------------
    async def inspect_request(self, chunk: bytes) -> bool:
        """Called with each chunk the client sends, before it goes on; False cuts the
        connection (the chunk never reaches the upstream)."""
        return True

    # -- plumbing ------------------------------------------------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accepted, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                _reset(writer)  # the upstream is down: so is the proxy, to the client
                return
            link = _Link(client=writer, upstream=up_writer)
            self._links.add(link)
            up_queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            down_queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            link.tasks = [
                asyncio.create_task(self._read(link, reader, up_queue, "up")),
                asyncio.create_task(self._write(link, up_queue, up_writer, "up")),
                asyncio.create_task(self._read(link, up_reader, down_queue, "down")),
                asyncio.create_task(self._write(link, down_queue, writer, "down")),
            ]
            await link.closed.wait()
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._handlers.discard(task)

    async def _read(
        self,
        link: _Link,
        source: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes]],
        direction: Direction,
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self._flowing.wait()  # half-open: not even read
                chunk = await source.read(_CHUNK)
                if not chunk:
                    break
                await self._flowing.wait()
                if self._blackhole:
                    link.swallowed = True
                    continue  # read, never answered
                if direction == "up" and not await self.inspect_request(chunk):
                    self._close(link, reset=False)
                    return
                queue.put_nowait((loop.time() + self._delay[direction], chunk))
        queue.put_nowait((0.0, b""))  # end of stream: the writer closes the link once sent

    async def _write(
        self,
        link: _Link,
        queue: asyncio.Queue[tuple[float, bytes]],
        sink: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                if self._blackhole:
                    link.swallowed = True
                    continue  # what was on its way is swallowed too
                if direction == "down" and self._drop_after is not None:
                    room = self._drop_after - link.reply_bytes
                    if len(chunk) > room:
                        sink.write(chunk[: max(room, 0)])
                        with contextlib.suppress(ConnectionError):
                            await sink.drain()
                        self._drop_after = None
                        self.cut_replies += 1
                        self._close(link, reset=True)
                        return
                    link.reply_bytes += len(chunk)
                sink.write(chunk)
                await sink.drain()
        self._close(link, reset=False)

    def _close(self, link: _Link, *, reset: bool) -> None:
        if link.closed.is_set():
            return
        link.closed.set()
        self._links.discard(link)
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
        for writer in (link.client, link.upstream):
            if reset:
                _reset(writer)
            else:
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: the peer's next read fails with ECONNRESET, not an orderly EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()
