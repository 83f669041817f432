"""One pipelined connection to a Redis server for the store's hot path, through hiredis.

The store's hot-path calls (admit, commit, records, counters) are small and many. Through
redis-py's ``Pipeline`` each batch costs a pipeline object, a pooled connection, a task
for the flush loop and several event-loop turns; on one core that overhead was most of a
message's CPU (docs/performance.md, "One connection for the hot path"). This module keeps
one connection per store instead, writes every batch with one ``writelines`` and reads the
replies as they arrive, in order, on the protocol's callback, with ``hiredis`` packing the
commands and parsing the replies (the same parser redis-py uses when it is installed).

Guarantees:

- Commands run in the order they are sent, and each command's reply reaches its own
  :class:`PipelinedCommand` ``done`` in that order. Error replies are values (redis-py's
  ``ResponseError``, ``NoScriptError`` for ``NOSCRIPT``), as a pipeline run with
  ``raise_on_error=False`` returns them.
- Every command gets its reply or a :class:`StoreError`: a connection that drops fails each
  command in flight; a server that does not answer the oldest command in flight within
  ``command_timeout`` has its connection aborted and each command in flight failed. A command
  that failed so may still have been applied; callers retry at their own level, where
  dedupe makes that safe (the same contract as the store's other paths).
- Nothing is resent: a command sent while disconnected waits for one (re)connection
  attempt, made on demand, and fails if that attempt fails.
- Only a plain TCP server (``redis://``) is spoken to this way; TLS, Unix sockets, Sentinel
  and Cluster keep redis-py's pipeline (:func:`wire_target` says which), and so does a store
  with replica acknowledgement on, whose pipelines end in ``WAIT``
  (:mod:`gateway.store.redis_replication`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from gateway.errors import StoreError

__all__ = ["PipelinedCommand", "RedisWire", "WireTarget", "wire_target"]


@dataclass(slots=True)
class PipelinedCommand:
    """One command of the next pipeline; ``done`` receives its reply or a StoreError."""

    args: tuple[Any, ...]
    done: Callable[[Any], None]
    script: AsyncScript | None = None  # for reloading after NOSCRIPT
    # An acknowledging write: with replica acks on, its reply waits for the replicas.
    replicated: bool = False


@dataclass(frozen=True, slots=True)
class WireTarget:
    """Where and as whom to connect: what redis-py parsed from the store's URL."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    # The url's socket_timeout / socket_connect_timeout, when it sets them.
    command_timeout: float | None = None
    connect_timeout: float | None = None


def wire_target(client: Redis | RedisCluster) -> WireTarget | None:
    """The server ``client`` talks to, when the wire can reach it the same way; else None."""
    if isinstance(client, RedisCluster):
        return None
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    # Exactly the plain TCP connection: TLS, Unix sockets, Sentinel-managed connections,
    # credential providers and RESP3 stay with redis-py, which knows them.
    if pool.connection_class is not Connection:
        return None
    if kwargs.get("credential_provider") is not None or str(kwargs.get("protocol", 2)) != "2":
        return None
    return WireTarget(
        host=str(kwargs.get("host", "localhost")),
        port=int(kwargs.get("port", 6379)),
        db=int(kwargs.get("db", 0) or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        command_timeout=_seconds(kwargs.get("socket_timeout")),
        connect_timeout=_seconds(kwargs.get("socket_connect_timeout")),
    )


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def _reply_error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


class _Handshake:
    """The reply of a connection's AUTH/SELECT: an error there fails the connection."""


class _Link(asyncio.Protocol):
    """One TCP connection of a :class:`RedisWire`, its transport and its reply parser.

    Each connection has its own: a connection the wire gave up on may still report its end
    after a new one was made, and must not touch the new one's state.
    """

    def __init__(self, wire: RedisWire) -> None:
        self.wire = wire
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=_reply_error)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any event loop's stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)
        self.wire._made(self)

    def data_received(self, data: bytes) -> None:
        self.wire._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.wire._lost(self, exc)


class RedisWire:
    """The connection; :meth:`send` queues a batch, written on the next loop turn."""

    def __init__(
        self,
        target: WireTarget,
        reply: Callable[[PipelinedCommand, Any], None],
        *,
        connect_timeout: float,
        command_timeout: float,
    ) -> None:
        self._target = target
        self._reply = reply
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._link: _Link | None = None  # the current connection, once made
        self._connecting: asyncio.Task[None] | None = None
        self._unsent: list[PipelinedCommand | _Handshake] = []
        self._unsent_bytes: list[bytes] = []
        self._unsent_timeout = 0.0
        # Commands written on the current connection and not answered yet, oldest first,
        # with the time each must be answered by.
        self._in_flight: collections.deque[tuple[PipelinedCommand | _Handshake, float]] = (
            collections.deque()
        )
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._link is not None

    # -- sending -------------------------------------------------------------------------------
    def send(self, commands: list[PipelinedCommand], *, timeout: float | None = None) -> None:
        """Write ``commands`` now when connected, else after the connection is made.

        ``timeout``: how long the server may take to answer them, instead of the wire's
        command timeout (a blocking read's own time, plus that).
        """
        if self._closed:
            failed = StoreError("redis store is closed")
            for command in commands:
                self._reply(command, failed)
            return
        pack = hiredis.pack_command
        self._unsent_bytes.extend(pack(command.args) for command in commands)
        self._unsent.extend(commands)
        if timeout is not None:
            self._unsent_timeout = max(self._unsent_timeout, timeout)
        if self._link is not None:
            self._write(self._link)
        elif self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name="redis-wire-connect")

    def _write(self, link: _Link) -> None:
        assert link.transport is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self._command_timeout, self._unsent_timeout)
        self._in_flight.extend((command, deadline) for command in self._unsent)
        link.transport.writelines(self._unsent_bytes)
        self._unsent, self._unsent_bytes, self._unsent_timeout = [], [], 0.0
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadline, self._overdue)

    async def _connect(self) -> None:
        target = self._target
        try:
            async with asyncio.timeout(self._connect_timeout):
                await asyncio.get_running_loop().create_connection(
                    lambda: _Link(self), target.host, target.port
                )
        except (OSError, TimeoutError) as exc:
            self._fail_unsent(StoreError(f"redis connect failed: {exc!r}"))
        finally:
            self._connecting = None
        if self._unsent:  # connected, yet nothing went out: never leave a caller waiting
            self._fail_unsent(StoreError("redis connection closed before use"))

    # -- the current connection's events -------------------------------------------------------
    def _made(self, link: _Link) -> None:
        self._link = link
        # The handshake goes first on the connection, so everything after it runs as the
        # configured user on the configured database.
        handshake: list[tuple[Any, ...]] = []
        if self._target.password is not None:
            user = () if self._target.username is None else (self._target.username,)
            handshake.append(("AUTH", *user, self._target.password))
        if self._target.db:
            handshake.append(("SELECT", self._target.db))
        if handshake:
            self._unsent_bytes[:0] = [hiredis.pack_command(c) for c in handshake]
            self._unsent[:0] = [_Handshake() for _ in handshake]
        if self._unsent:
            self._write(link)

    def _received(self, link: _Link, data: bytes) -> None:
        if link is not self._link:
            return  # a connection given up on: its replies belong to nobody now
        link.reader.feed(data)
        reply = self._reply
        while (result := link.reader.gets()) is not False:
            if not self._in_flight:
                # A reply nobody asked for: the stream is out of step, so nothing read from
                # it can be trusted any more.
                self._abort(StoreError("redis sent a reply nobody asked for"))
                return
            command, _ = self._in_flight.popleft()
            if isinstance(command, _Handshake):
                if isinstance(result, ResponseError):
                    self._abort(StoreError(f"redis handshake failed: {result}"))
                    return
                continue
            reply(command, result)
            if link is not self._link:
                return  # the reply's receiver dropped the connection
        if not self._in_flight:
            self._idle()

    def _lost(self, link: _Link, exc: Exception | None) -> None:
        if link is not self._link:
            return  # given up on already; its commands were failed then
        self._link = None
        self._fail_in_flight(StoreError(f"redis connection lost: {exc!r}"))

    # -- failures and closing ------------------------------------------------------------------
    def _overdue(self) -> None:
        self._deadline_timer = None
        if not self._in_flight:
            return
        _, deadline = self._in_flight[0]
        loop = asyncio.get_running_loop()
        if deadline <= loop.time():
            self._abort(StoreError("redis did not answer in time"))
        else:
            self._deadline_timer = loop.call_at(deadline, self._overdue)

    def abort(self) -> None:
        """Drop the connection now, failing whatever is in flight (a reply still owed to a
        caller that gave up would otherwise hold up the next caller's command)."""
        self._abort(StoreError("redis connection dropped by its user"))

    def _abort(self, error: StoreError) -> None:
        link, self._link = self._link, None
        self._fail_in_flight(error)
        if link is not None and link.transport is not None:
            link.transport.abort()

    def _fail_in_flight(self, error: StoreError) -> None:
        in_flight, self._in_flight = self._in_flight, collections.deque()
        for command, _ in in_flight:
            if isinstance(command, PipelinedCommand):
                self._reply(command, error)
        self._idle()

    def _fail_unsent(self, error: StoreError) -> None:
        unsent, self._unsent, self._unsent_bytes = self._unsent, [], []
        for command in unsent:
            if isinstance(command, PipelinedCommand):
                self._reply(command, error)

    def _idle(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def aclose(self) -> None:
        """Wait for the replies in flight (up to the command timeout), then close."""
        self._closed = True
        if self._connecting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._in_flight and self._link is not None:
            self._drained = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._command_timeout):
                    await self._drained
        self._fail_unsent(StoreError("redis store is closed"))
        link, self._link = self._link, None
        self._fail_in_flight(StoreError("redis store is closed"))
        if link is not None and link.transport is not None:
            link.transport.close()
