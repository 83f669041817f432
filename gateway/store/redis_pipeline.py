"""The Redis store's connection plumbing: auto-pipelining and its flush loop.

Guarantees:

- Hot-path calls (admit, commit, ack, append, records) are queued and sent together; the
  admits queued together are merged into one script call per hash tag. On one plain server
  (:func:`gateway.store.redis_wire.wire_target`) what was queued during one event-loop turn
  is written at once on the store's own connection and blocking reads get connections of
  their own; otherwise one flusher sends everything queued since its last run as ONE
  redis-py pipeline. On a small box a round trip per request costs most of the
  throughput; batching is the point.
- Every queued caller gets its reply or a :class:`StoreError`, never silence: a pipeline
  that dies half-way fails all of its commands, and a caller that gave up leaves what was
  sent applied.
- A script the server lost (``NOSCRIPT``, e.g. after ``SCRIPT FLUSH`` or a failover) is
  reloaded and resent once; it was not executed, so resending is safe. Nothing else is
  resent: automatic command retries are off.
- On a Redis Cluster a command whose keys span slots fails alone, not its batch.
- With replica acknowledgement on (:mod:`gateway.store.redis_replication`), a pipeline
  carrying an acknowledging write ends in ``WAIT``, and those writes' callers get their
  reply only if enough replicas confirmed it; with it off, no pipeline changes at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from gateway.errors import StoreError
from gateway.store.base import Admission
from gateway.store.redis_cluster import SlotReads, cross_slot_error
from gateway.store.redis_replication import ReplicaAcks
from gateway.store.redis_scripts import (
    ACQUIRE_LUA,
    ADMIT_LUA,
    APPEND_LOG_LUA,
    CLAIM_LUA,
    COMMIT_LUA,
    COUNT_AFTER_LUA,
    HEARTBEAT_LUA,
    INCR_TTL_LUA,
    LEASE_HOLDER_LUA,
    MEMBERS_LUA,
    READ_LOG_LUA,
    RELEASE_LUA,
    RENEW_LUA,
    TOKENS_LUA,
)
from gateway.store.redis_wire import PipelinedCommand, RedisWire, wire_target

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "FIELD",
    "REDIS_ERRORS",
    "AdmitCall",
    "PipelinedCommand",
    "RedisPipeline",
    "raw_command",
    "resolve",
    "store_errors",
    "text",
    "to_ms",
]

# What redis-py raises: a cluster client's own errors (no slot owner known, keys of several
# slots in one command) do not derive from RedisError.
REDIS_ERRORS = (RedisError, RedisClusterException)

FIELD = b"p"  # the one field of every stream entry: the caller's payload
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0  # a server that stops answering must surface as StoreError, not a hang


def to_ms(seconds: float) -> int:
    """Redis wants whole positive milliseconds; round up so nothing expires early."""
    return max(1, math.ceil(seconds * 1000))


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _slot_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first non-empty ``{tag}``, else all."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


async def raw_command(client: Redis | RedisCluster, *args: Any) -> Any:
    """``execute_command`` for commands redis-py has no typed method for (or parses badly)."""
    return await client.execute_command(*args)


@contextlib.contextmanager
def store_errors(what: str) -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StoreError(f"redis {what} failed: {exc}") from exc


@dataclass(slots=True)
class AdmitCall:
    """One caller's ``admit``, waiting to be merged per hash tag into the next pipeline."""

    items: Sequence[Admission]
    ttl_ms: int
    future: asyncio.Future[list[str | None]]
    results: list[str | None] = field(default_factory=list)
    remaining: int = 0


def resolve(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # the caller gave up; what was sent still happened
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _fail_batch(commands: list[PipelinedCommand], admits: list[AdmitCall]) -> None:
    """Never leave a caller waiting forever on a batch that died half-way or was never
    built: each of its callers gets a StoreError."""
    failed = StoreError("redis pipeline aborted")
    for command in commands:
        command.done(failed)
    for call in admits:
        resolve(call.future, failed)


class RedisPipeline:
    """Connections, registered scripts and the shared pipeline of one Redis store."""

    def __init__(
        self,
        url: str,
        client: Redis | RedisCluster,
        blocking: Redis | RedisCluster,
        *,
        replica_acks: ReplicaAcks | None = None,
    ) -> None:
        self.url = url
        self._client = client
        self._blocking = blocking
        self._replica_acks = replica_acks if replica_acks and replica_acks.replicas else None
        # Only on a cluster: reads of several slots' streams (one XREADGROUP each).
        self._slot_reads = SlotReads() if isinstance(client, RedisCluster) else None
        self._commands: list[PipelinedCommand] = []
        self._admits: list[AdmitCall] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        # On one plain server the hot path has a connection of its own (redis_wire); on a
        # cluster, TLS, a Unix socket or Sentinel it goes through redis-py's pipeline.
        # Replica acks append WAIT to redis-py's pipelines (_run_pipeline): no wire then.
        target = self._wire_target = wire_target(client) if self._replica_acks is None else None
        self._readers: list[RedisWire] = []  # idle connections for blocking reads
        self._wire = (
            None
            if target is None
            else RedisWire(
                target,
                self._wire_reply,
                connect_timeout=target.connect_timeout or CONNECT_TIMEOUT,
                command_timeout=target.command_timeout or COMMAND_TIMEOUT,
            )
        )
        self._wire_flush_due = False
        self._admit_script = client.register_script(ADMIT_LUA)
        self._commit_script = client.register_script(COMMIT_LUA)
        self._append_log_script = client.register_script(APPEND_LOG_LUA)
        self._read_log_script = client.register_script(READ_LOG_LUA)
        self._claim_script = client.register_script(CLAIM_LUA)
        self._count_after_script = client.register_script(COUNT_AFTER_LUA)
        self._tokens_script = client.register_script(TOKENS_LUA)
        self._incr_ttl_script = client.register_script(INCR_TTL_LUA)
        self._acquire_script = client.register_script(ACQUIRE_LUA)
        self._release_script = client.register_script(RELEASE_LUA)
        self._renew_script = client.register_script(RENEW_LUA)
        self._heartbeat_script = client.register_script(HEARTBEAT_LUA)
        self._members_script = client.register_script(MEMBERS_LUA)
        self._lease_holder_script = client.register_script(LEASE_HOLDER_LUA)

    # -- plumbing ------------------------------------------------------------------------------
    async def ping(self) -> None:
        with store_errors("ping"):
            if isinstance(self._client, RedisCluster):
                # Every master, which the store needs (redis-py would ask one node at random,
                # and miss a master that is down); not the replicas, which it never reads: one
                # replica down must not make every gateway process unready.
                await self._client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await self._client.ping()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher
        if self._wire is not None:
            self._flush_wire()  # what was queued before the close still goes out
            await self._wire.aclose()
        for reader in self._readers:
            await reader.aclose()
        if self._slot_reads is not None:
            await self._slot_reads.aclose()
        await self._client.aclose()
        await self._blocking.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("redis store is closed")

    def _kick(self) -> None:
        if self._wire is not None:
            # Everything queued during this turn of the event loop goes out as one write.
            if not self._wire_flush_due:
                self._wire_flush_due = True
                asyncio.get_running_loop().call_soon(self._flush_wire)
            return
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="redis-store-flush")

    async def _pipelined(
        self, *args: Any, script: AsyncScript | None = None, replicated: bool = False
    ) -> Any:
        """Send one command in the next shared pipeline and return its reply; a
        ``replicated`` one (an acknowledging write) waits for the replicas if asked to."""
        self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._commands.append(
            PipelinedCommand(args, lambda result: resolve(fut, result), script, replicated)
        )
        self._kick()
        return await fut

    async def _flush_loop(self) -> None:
        while self._commands or self._admits:
            # Everything queued while the previous pipeline was in flight goes in this one.
            commands, self._commands = self._commands, []
            admits, self._admits = self._admits, []
            try:
                commands.extend(self._admit_commands(admits))
                await self._run_pipeline(commands, reload_scripts=True)
            except BaseException:
                _fail_batch(commands, admits)
                raise

    def _flush_wire(self) -> None:
        assert self._wire is not None
        self._wire_flush_due = False
        commands, self._commands = self._commands, []
        admits, self._admits = self._admits, []
        try:
            commands.extend(self._admit_commands(admits))
        except BaseException:
            _fail_batch(commands, admits)
            raise
        if commands:
            self._wire.send(commands)

    async def _blocking_call(self, *args: Any, timeout: float) -> Any:
        """One command that may block (``XREADGROUP ... BLOCK``) on a wire of its own, so
        nothing queues behind it; the server has ``timeout`` seconds more than the command
        timeout to answer."""
        assert self._wire_target is not None  # only on a server the wire can reach
        self._check_open()
        if self._readers:
            reader = self._readers.pop()
        else:
            target = self._wire_target
            reader = RedisWire(
                target,
                self._wire_reply,
                connect_timeout=target.connect_timeout or CONNECT_TIMEOUT,
                command_timeout=target.command_timeout or COMMAND_TIMEOUT,
            )
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        reader.send([PipelinedCommand(args, partial(resolve, fut))], timeout=timeout)
        try:
            return await fut
        finally:
            # A cancelled future is done too, but its reply is still owed.
            if fut.done() and not fut.cancelled() and not self._closed:
                self._readers.append(reader)
            else:
                reader.abort()  # the caller gave up while the server still owes a reply

    def _wire_reply(self, command: PipelinedCommand, result: Any) -> None:
        if (
            isinstance(result, NoScriptError)
            and command.script is not None
            and command.args[0] == "EVALSHA"
            and self._wire is not None
        ):
            # Not executed at all, so resending is safe; EVAL also caches the script.
            command.args = ("EVAL", command.script.script, *command.args[2:])
            self._wire.send([command])
            return
        if isinstance(result, REDIS_ERRORS):
            command.done(StoreError(f"redis command failed: {result}"))
        else:
            command.done(result)

    async def _run_pipeline(
        self, commands: list[PipelinedCommand], *, reload_scripts: bool
    ) -> None:
        if self._slot_reads is not None:
            commands = self._one_slot_each(commands)
        acks = self._replica_acks
        waits: list[Any] = []  # where a WAIT goes: None on one server, else each master
        if acks is not None and any(c.replicated for c in commands):
            waits = self._wait_targets(commands)
        tail: list[tuple[Any, tuple[Any, ...]]] = []  # after the commands: marks, WAITs
        for target in waits:
            assert acks is not None
            mark = self._duplicate_mark(commands, target)
            if mark is not None:
                tail.append((target, mark))
            # Last on the connection that took the writes: it covers all of them.
            tail.append((target, acks.command()))
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command.args)
                for target, args in tail:
                    node = {} if target is None else {"target_nodes": self._node(target)}
                    pipe.execute_command(*args, **node)
                results = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            for command in commands:
                command.done(StoreError(f"redis pipeline failed: {exc}"))
            return
        short: dict[Any, str | None] = {}  # per WAIT target: what fell short, if anything
        if tail:
            assert acks is not None
            replies, results = results[len(commands) :], results[: len(commands)]
            for (target, args), reply in zip(tail, replies, strict=True):
                if args[0] in {"WAIT", "WAITAOF"}:
                    short[target] = acks.shortfall(reply)
        missing: list[PipelinedCommand] = []
        unconfirmed: dict[str, list[PipelinedCommand]] = {}
        for command, result in zip(commands, results, strict=True):
            if isinstance(result, NoScriptError) and command.script is not None and reload_scripts:
                missing.append(command)  # not executed at all, so resending is safe
            elif isinstance(result, REDIS_ERRORS):
                command.done(StoreError(f"redis command failed: {result}"))
            elif command.replicated and waits and (shortfall := self._shortfall(short, command)):
                unconfirmed.setdefault(shortfall, []).append(command)
            else:
                command.done(result)
        for shortfall, failed in unconfirmed.items():
            assert acks is not None
            error = acks.failed(shortfall, len(failed))
            for command in failed:
                command.done(error)
        if missing:
            try:
                for script in {id(c.script): c.script for c in missing if c.script}.values():
                    script.sha = await self._client.script_load(script.script)
            except REDIS_ERRORS as exc:
                for command in missing:
                    command.done(StoreError(f"redis script load failed: {exc}"))
                return
            await self._run_pipeline(missing, reload_scripts=False)

    def _node_of(self, command: PipelinedCommand) -> Any:
        """The master that runs ``command`` on a cluster (None on one server)."""
        if not isinstance(self._client, RedisCluster):
            return None
        args = command.args
        key = args[3] if args[0] == "EVALSHA" else args[1]
        node = self._client.get_node_from_key(key)
        return None if node is None else node.name

    def _duplicate_mark(
        self, commands: list[PipelinedCommand], target: Any
    ) -> tuple[Any, ...] | None:
        """A write that changes nothing, after the admits that ``target`` runs.

        ``WAIT`` covers what its own connection wrote. An admit that finds its event a
        duplicate writes nothing, yet its caller acknowledges the event, whose first copy
        another connection (or process) wrote, perhaps never replicated. Any write after
        that first copy moves this connection's replication offset past it, so the WAIT
        covers it too: the admit's own dedupe claim is rewritten as it is, with its TTL.
        (Redis 7.0 moves a connection's offset on every command, measured, so there it is
        redundant; it is for servers that move it only on a write reaching the replicas.)
        """
        for command in commands:
            if command.script is self._admit_script and self._node_of(command) == target:
                return ("SET", command.args[3], b"1", "XX", "KEEPTTL")
        return None

    def _shortfall(self, short: dict[Any, str | None], command: PipelinedCommand) -> str | None:
        node = self._node_of(command)
        if node not in short:  # a cluster slot without a known master: no WAIT covered it
            return "no master known for its slot"
        return short[node]

    def _node(self, name: str) -> Any:
        assert isinstance(self._client, RedisCluster)
        return self._client.get_node(node_name=name)

    def _wait_targets(self, commands: list[PipelinedCommand]) -> list[Any]:
        """Where the WAITs for ``commands`` go: each master that takes one of their
        acknowledging writes (by node name), or ``[None]`` on one server."""
        if not isinstance(self._client, RedisCluster):
            return [None]
        nodes = (self._node_of(c) for c in commands if c.replicated)
        return list(dict.fromkeys(n for n in nodes if n is not None))

    @staticmethod
    def _one_slot_each(commands: list[PipelinedCommand]) -> list[PipelinedCommand]:
        """The commands a cluster can run: one spanning slots fails alone, not the batch."""
        runnable: list[PipelinedCommand] = []
        for command in commands:
            error = cross_slot_error(command.args)
            if error is None:
                runnable.append(command)
            else:
                command.done(error)
        return runnable

    def _evalsha(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
    ) -> tuple[Any, ...]:
        return ("EVALSHA", script.sha, len(keys), *keys, *args)

    def _admit_commands(self, calls: list[AdmitCall]) -> list[PipelinedCommand]:
        """Merge queued admits into one script call per hash-tag pair (one cluster slot)."""
        groups: dict[tuple[str, str], list[tuple[AdmitCall, int]]] = {}
        for call in calls:
            for i, item in enumerate(call.items):
                tag = (_slot_tag(item.dedupe_key), _slot_tag(item.stream))
                groups.setdefault(tag, []).append((call, i))
        commands: list[PipelinedCommand] = []
        for members in groups.values():
            keys: list[str] = []
            args: list[Any] = []
            for call, i in members:
                item = call.items[i]
                keys += (item.dedupe_key, item.stream)
                args += (call.ttl_ms, item.payload, item.log_cap or 0)
            commands.append(
                PipelinedCommand(
                    self._evalsha(self._admit_script, keys, args),
                    partial(self._admit_done, members),
                    self._admit_script,
                    replicated=True,
                )
            )
        return commands

    @staticmethod
    def _admit_done(members: list[tuple[AdmitCall, int]], result: Any) -> None:
        if isinstance(result, BaseException):
            for call, _ in members:
                resolve(call.future, result)
            return
        for (call, i), entry_id in zip(members, result, strict=True):
            call.results[i] = None if entry_id == 0 else text(entry_id)
            call.remaining -= 1
            if call.remaining == 0:
                resolve(call.future, call.results)
