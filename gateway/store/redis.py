"""Redis store: production, shared by many gateway processes on many hosts.

Design, and why:

- Streams are Redis Streams, so consumer groups, pending lists and reclaiming are Redis's
  own (``XREADGROUP``/``XACK``/``XAUTOCLAIM``), not something rebuilt on top.
- Every multi-step change (admit, commit, token bucket, leases, heartbeats) is one Lua
  script, so it is atomic and costs one round trip. All keys a script touches are passed in
  ``KEYS`` so a cluster can route it; :mod:`gateway.store.keys` gives the keys of one
  partition a shared hash tag so they land in one slot.
- On a Redis Cluster (``open(url, cluster=True)``) the same code runs over redis-py's
  ``RedisCluster``; :mod:`gateway.store.redis_cluster` holds the few differences.
- Auto-pipelining: hot-path calls (admit, commit, ack, append, records) are queued and a
  flusher sends everything queued since its last run as ONE pipeline. Concurrent admits are
  additionally merged into one script call per hash tag. On a small box a round trip per
  request costs most of the throughput; batching is the point.
- Blocking ``XREADGROUP`` runs on its own connection pool, so long polls never hold the
  connections the hot path needs.
- Automatic command retries are off: a pipeline resent after a connection drop could append
  twice or report a commit it applied as a conflict. Callers see a :class:`StoreError`
  instead and retry at their own level, where dedupe makes that safe.
- Times that several processes must agree on (buckets, heartbeats) come from the server's
  ``TIME``, never from client clocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from gateway.errors import StoreError
from gateway.store.base import (
    Admission,
    Commit,
    Holding,
    StreamEntry,
    TokenBucketResult,
    Versioned,
)
from gateway.store.cursors import log_cursor, redis_stream_id
from gateway.store.redis_cluster import (
    SlotReads,
    by_slot,
    connect_cluster,
    cross_slot_error,
    scan_cluster,
)

__all__ = ["RedisStore"]

# What redis-py raises: a cluster client's own errors (no slot owner known, keys of several
# slots in one command) do not derive from RedisError.
_REDIS_ERRORS = (RedisError, RedisClusterException)

_FIELD = b"p"  # the one field of every stream entry: the caller's payload
_CONNECT_TIMEOUT = 5.0
_COMMAND_TIMEOUT = 10.0  # a server that stops answering must surface as StoreError, not a hang

# Two values carry a number in front of their bytes, as "<n>:<bytes>": a state (n is its
# version) and a log entry (n is its id). A state is a plain string, not a hash of value and
# version: a hash with a value over 64 bytes leaves the compact encoding and costs ~160 B more.
# A log is a list of such entries, ids counting up from the newest one's; LTRIM keeps the
# newest ``cap``. A one-entry list costs ~100 B beyond its entry, where a one-entry stream
# costs a whole 4 KiB listpack node. Prefixed to every script that needs them.
_NUMBERED_LUA = """
local function number_of(value)
  if not value then return 0 end
  return tonumber(string.sub(value, 1, string.find(value, ':', 1, true) - 1))
end
local function log_append(key, payload, cap)
  local id = number_of(redis.call('LINDEX', key, -1)) + 1
  redis.call('RPUSH', key, id .. ':' .. payload)
  redis.call('LTRIM', key, -tonumber(cap), -1)
  return tostring(id)
end
"""

_APPEND_LOG_LUA = _NUMBERED_LUA + "return log_append(KEYS[1], ARGV[1], ARGV[2])"

# Ids in a log are consecutive (appends count up by one, trimming drops the oldest), so the
# entry after id ``after`` sits at a computable index: read just the page, not the whole list.
# KEYS: log   ARGV: after (0 = from the oldest kept), count
_READ_LOG_LUA = (
    _NUMBERED_LUA
    + """
local first = number_of(redis.call('LINDEX', KEYS[1], 0))
if first == 0 then return {} end
local start = math.max(0, tonumber(ARGV[1]) - first + 1)
return redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
"""
)

# Claim each dedupe key and append its payload only if the claim is new, in one atomic step:
# a crash can never leave a claimed key without its entry, nor an entry without its claim.
# KEYS: dedupe1, target1, dedupe2, target2, ...
# ARGV: ttl_ms1, payload1, cap1 (0: the target is a stream, else a log), ttl_ms2, ...
# Returns per item the new entry id, or 0 for a duplicate.
_ADMIT_LUA = (
    _NUMBERED_LUA
    + """
local out, a = {}, 1
for i = 1, #KEYS, 2 do
  if not redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[a]) then
    out[#out + 1] = 0
  elseif ARGV[a + 2] == '0' then
    out[#out + 1] = redis.call('XADD', KEYS[i + 1], '*', 'p', ARGV[a + 1])
  else
    out[#out + 1] = log_append(KEYS[i + 1], ARGV[a + 1], ARGV[a + 2])
  end
  a = a + 3
end
return out
"""
)

# All-or-nothing commit. The version check runs before any write, so a conflict changes
# nothing. (Lua cannot roll back, so a WRONGTYPE error after the check would leave a partial
# commit; keys.py keeps every key to one type, which rules that out.)
# KEYS: [state], append streams..., record keys..., ack streams..., delete keys..., logs...
# ARGV: has_state, expected, value, ttl_ms (0 = none), n_appends, n_records, n_acks,
#       n_deletes, n_logs, then payload per append, (value, ttl_ms) per record, (group, id)
#       per ack, (payload, cap) per log.
# Returns the new version, 0 without a state write, or -1 on a version conflict.
_COMMIT_LUA = (
    _NUMBERED_LUA
    + """
local k, a, version = 1, 10, 0
if ARGV[1] == '1' then
  local have = number_of(redis.call('GET', KEYS[1]))
  if have ~= tonumber(ARGV[2]) then return -1 end
  version = have + 1
  if ARGV[4] ~= '0' then redis.call('SET', KEYS[1], version .. ':' .. ARGV[3], 'PX', ARGV[4])
  else redis.call('SET', KEYS[1], version .. ':' .. ARGV[3]) end
  k = 2
end
for _ = 1, tonumber(ARGV[5]) do
  redis.call('XADD', KEYS[k], '*', 'p', ARGV[a]); k = k + 1; a = a + 1
end
for _ = 1, tonumber(ARGV[6]) do
  if ARGV[a + 1] ~= '0' then redis.call('SET', KEYS[k], ARGV[a], 'PX', ARGV[a + 1])
  else redis.call('SET', KEYS[k], ARGV[a]) end
  k = k + 1; a = a + 2
end
for _ = 1, tonumber(ARGV[7]) do
  redis.call('XACK', KEYS[k], ARGV[a], ARGV[a + 1]); k = k + 1; a = a + 2
end
for _ = 1, tonumber(ARGV[8]) do
  redis.call('DEL', KEYS[k]); k = k + 1
end
for _ = 1, tonumber(ARGV[9]) do
  log_append(KEYS[k], ARGV[a], ARGV[a + 1]); k = k + 1; a = a + 2
end
return version
"""
)

# XAUTOCLAIM does not report delivery counts; read them from the pending list in the same
# atomic step, so a caller can tell a retry from a first delivery (poison messages).
# KEYS: stream   ARGV: group, consumer, min_idle_ms, start, count
# Returns {next_cursor, {id, payload, deliveries}...}.
_CLAIM_LUA = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {r[1]}
for _, e in ipairs(r[2]) do
  if e[2] then  -- Redis 6.2 lists entries deleted while pending with nil fields
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    out[#out + 1] = {e[1], e[2][2], p[1][4]}
  end
end
return out
"""

# XINFO reports no lag once entries past the group's cursor were deleted; count what lies
# past the cursor here, server-side, rather than shipping the entries to the client.
# KEYS: stream   ARGV: last delivered id
_COUNT_AFTER_LUA = """
return #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
"""

# Token bucket on the server clock, so processes with skewed clocks share one bucket fairly.
# KEYS: bucket   ARGV: rate/s, burst, cost   Returns {allowed (0/1), tokens left as string}.
_TOKENS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if tokens >= cost then tokens = tokens - cost; allowed = 1 end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 's', string.format('%.17g', now))
-- a bucket idle for burst/rate seconds is full again, the same as absent: let it expire
if rate > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000) end
return {allowed, string.format('%.17g', tokens)}
"""

# A counter that gets its expiry only when created (never extended), in one atomic step
# that rides in the shared pipeline like any other command.
# KEYS: counter   ARGV: amount, ttl_ms
_INCR_TTL_LUA = """
redis.call('SET', KEYS[1], 0, 'NX', 'PX', ARGV[2])
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""

# Take the lease if free (an expired lease is gone) or renew it if we already hold it; a
# plain SET NX could not renew, and GET-then-SET from the client would race.
# KEYS: lease   ARGV: owner, ttl_ms
_ACQUIRE_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Release only our own lease: after it expired someone else may hold it.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# Members are scored by their expiry on the server clock; expired ones are dropped on every
# beat, and the set itself expires with its longest-lived member.
# KEYS: set   ARGV: member, ttl_ms   Returns the live members (unordered).
_HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# Read-only views of the two above. A member is alive while its score is above the server's
# now; the expired ones are left for the next beat to drop. KEYS: set   Returns: now_ms and
# the live members with their scores.
_MEMBERS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')}
"""

# One lease's holder and its time left, read together (a GET then a separate PTTL could pair
# one holder with the next one's expiry). KEYS: lease   Returns: nil or {owner, pttl_ms}.
_LEASE_HOLDER_LUA = """
local owner = redis.call('GET', KEYS[1])
if not owner then return false end
return {owner, redis.call('PTTL', KEYS[1])}
"""


def _ms(seconds: float) -> int:
    """Redis wants whole positive milliseconds; round up so nothing expires early."""
    return max(1, math.ceil(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _slot_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first non-empty ``{tag}``, else all."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def _command(client: Redis | RedisCluster, *args: Any) -> Any:
    """``execute_command`` for commands redis-py has no typed method for (or parses badly)."""
    return await client.execute_command(*args)


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except _REDIS_ERRORS as exc:
        raise StoreError(f"redis {what} failed: {exc}") from exc


@dataclass(slots=True)
class _Command:
    """One command of the next pipeline; ``done`` receives its reply or a StoreError."""

    args: tuple[Any, ...]
    done: Callable[[Any], None]
    script: AsyncScript | None = None  # for reloading after NOSCRIPT


@dataclass(slots=True)
class _AdmitCall:
    items: Sequence[Admission]
    ttl_ms: int
    future: asyncio.Future[list[str | None]]
    results: list[str | None] = field(default_factory=list)
    remaining: int = 0


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # the caller gave up; what was sent still happened
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class RedisStore:
    def __init__(
        self, url: str, client: Redis | RedisCluster, blocking: Redis | RedisCluster
    ) -> None:
        self.url = url
        self._client = client
        self._blocking = blocking
        # Only on a cluster: reads of several slots' streams (one XREADGROUP each).
        self._slot_reads = SlotReads() if isinstance(client, RedisCluster) else None
        self._commands: list[_Command] = []
        self._admits: list[_AdmitCall] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._admit_script = client.register_script(_ADMIT_LUA)
        self._commit_script = client.register_script(_COMMIT_LUA)
        self._append_log_script = client.register_script(_APPEND_LOG_LUA)
        self._read_log_script = client.register_script(_READ_LOG_LUA)
        self._claim_script = client.register_script(_CLAIM_LUA)
        self._count_after_script = client.register_script(_COUNT_AFTER_LUA)
        self._tokens_script = client.register_script(_TOKENS_LUA)
        self._incr_ttl_script = client.register_script(_INCR_TTL_LUA)
        self._acquire_script = client.register_script(_ACQUIRE_LUA)
        self._release_script = client.register_script(_RELEASE_LUA)
        self._heartbeat_script = client.register_script(_HEARTBEAT_LUA)
        self._members_script = client.register_script(_MEMBERS_LUA)
        self._lease_holder_script = client.register_script(_LEASE_HOLDER_LUA)

    @classmethod
    async def open(cls, url: str, *, cluster: bool = False) -> RedisStore:
        """Connect to the server at ``url``, or with ``cluster`` to the Redis Cluster that
        the node at ``url`` belongs to."""

        def connect(socket_timeout: float | None) -> Redis | RedisCluster:
            if cluster:
                return connect_cluster(
                    url, connect_timeout=_CONNECT_TIMEOUT, socket_timeout=socket_timeout
                )
            # Options in the URL's query string take precedence over these defaults.
            return Redis.from_url(
                url,
                decode_responses=False,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=_CONNECT_TIMEOUT,
                socket_timeout=socket_timeout,
            )

        # The blocking pool has no socket timeout (a BLOCK may be long); read_group bounds it.
        store = cls(url, connect(_COMMAND_TIMEOUT), connect(None))
        try:
            await store.ping()
            if isinstance(store._blocking, RedisCluster):
                with _errors("cluster slot map"):
                    await store._blocking.initialize()  # a cluster client routes nothing before
        except BaseException:
            await store.aclose()
            raise
        return store

    # -- plumbing ------------------------------------------------------------------------------
    async def ping(self) -> None:
        with _errors("ping"):
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
        if self._slot_reads is not None:
            await self._slot_reads.aclose()
        await self._client.aclose()
        await self._blocking.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("redis store is closed")

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="redis-store-flush")

    async def _pipelined(self, *args: Any, script: AsyncScript | None = None) -> Any:
        """Send one command in the next shared pipeline and return its reply."""
        self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._commands.append(_Command(args, lambda result: _resolve(fut, result), script))
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
                # Never leave a caller waiting forever on a batch that died half-way.
                failed = StoreError("redis pipeline aborted")
                for command in commands:
                    command.done(failed)
                for call in admits:
                    _resolve(call.future, failed)
                raise

    async def _run_pipeline(self, commands: list[_Command], *, reload_scripts: bool) -> None:
        if self._slot_reads is not None:
            commands = self._one_slot_each(commands)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command.args)
                results = await pipe.execute(raise_on_error=False)
        except _REDIS_ERRORS as exc:
            for command in commands:
                command.done(StoreError(f"redis pipeline failed: {exc}"))
            return
        missing: list[_Command] = []
        for command, result in zip(commands, results, strict=True):
            if isinstance(result, NoScriptError) and command.script is not None and reload_scripts:
                missing.append(command)  # not executed at all, so resending is safe
            elif isinstance(result, _REDIS_ERRORS):
                command.done(StoreError(f"redis command failed: {result}"))
            else:
                command.done(result)
        if missing:
            try:
                for script in {id(c.script): c.script for c in missing if c.script}.values():
                    script.sha = await self._client.script_load(script.script)
            except _REDIS_ERRORS as exc:
                for command in missing:
                    command.done(StoreError(f"redis script load failed: {exc}"))
                return
            await self._run_pipeline(missing, reload_scripts=False)

    @staticmethod
    def _one_slot_each(commands: list[_Command]) -> list[_Command]:
        """The commands a cluster can run: one spanning slots fails alone, not the batch."""
        runnable: list[_Command] = []
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

    # -- ingest --------------------------------------------------------------------------------
    async def admit(self, items: Sequence[Admission], *, dedupe_ttl: float) -> list[str | None]:
        self._check_open()
        if not items:
            return []
        fut: asyncio.Future[list[str | None]] = asyncio.get_running_loop().create_future()
        self._admits.append(
            _AdmitCall(items, _ms(dedupe_ttl), fut, [None] * len(items), len(items))
        )
        self._kick()
        return await fut

    def _admit_commands(self, calls: list[_AdmitCall]) -> list[_Command]:
        """Merge queued admits into one script call per hash-tag pair (one cluster slot)."""
        groups: dict[tuple[str, str], list[tuple[_AdmitCall, int]]] = {}
        for call in calls:
            for i, item in enumerate(call.items):
                tag = (_slot_tag(item.dedupe_key), _slot_tag(item.stream))
                groups.setdefault(tag, []).append((call, i))
        commands: list[_Command] = []
        for members in groups.values():
            keys: list[str] = []
            args: list[Any] = []
            for call, i in members:
                item = call.items[i]
                keys += (item.dedupe_key, item.stream)
                args += (call.ttl_ms, item.payload, item.log_cap or 0)
            commands.append(
                _Command(
                    self._evalsha(self._admit_script, keys, args),
                    partial(self._admit_done, members),
                    self._admit_script,
                )
            )
        return commands

    @staticmethod
    def _admit_done(members: list[tuple[_AdmitCall, int]], result: Any) -> None:
        if isinstance(result, BaseException):
            for call, _ in members:
                _resolve(call.future, result)
            return
        for (call, i), entry_id in zip(members, result, strict=True):
            call.results[i] = None if entry_id == 0 else _text(entry_id)
            call.remaining -= 1
            if call.remaining == 0:
                _resolve(call.future, call.results)

    async def claim(self, key: str, *, ttl: float) -> bool:
        return bool(await self._pipelined("SET", key, b"1", "NX", "PX", _ms(ttl)))

    # -- streams -------------------------------------------------------------------------------
    async def append(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        trim = () if maxlen is None else ("MAXLEN", maxlen)
        return _text(await self._pipelined("XADD", stream, *trim, "*", _FIELD, payload))

    async def ensure_group(self, stream: str, group: str) -> None:
        self._check_open()
        try:
            await _command(self._client, "XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise StoreError(f"redis XGROUP CREATE failed: {exc}") from exc
        except _REDIS_ERRORS as exc:
            raise StoreError(f"redis XGROUP CREATE failed: {exc}") from exc

    async def read_group(
        self,
        streams: Sequence[str],
        *,
        group: str,
        consumer: str,
        count: int,
        block: float,
    ) -> list[tuple[str, StreamEntry]]:
        self._check_open()
        names = list(dict.fromkeys(streams))
        if not names:
            await asyncio.sleep(block)
            return []
        read = partial(self._read_streams, group=group, consumer=consumer, count=count)
        if self._slot_reads is not None:
            # Always through SlotReads, one slot too: it also ends the reads kept from an
            # earlier call over streams this one no longer names.
            return await self._slot_reads.read(
                by_slot(names), group=group, consumer=consumer, block=block, read_batch=read
            )
        return await read(names, block)

    async def _read_streams(
        self, names: list[str], block: float, *, group: str, consumer: str, count: int
    ) -> list[tuple[str, StreamEntry]]:
        """One XREADGROUP over ``names`` (on a cluster: streams of one slot)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block
        for attempt in range(2):
            remaining = deadline - loop.time()
            blocking = ("BLOCK", _ms(remaining)) if remaining > 0 else ()
            client = self._blocking if blocking else self._client
            # On a cluster, name the node: redis-py would otherwise ask a node for the keys
            # of every XREADGROUP (COMMAND GETKEYS), a second round trip per read.
            try:
                node = (
                    {"target_nodes": client.get_node_from_key(names[0])}
                    if isinstance(client, RedisCluster)
                    else {}
                )
                async with asyncio.timeout(max(remaining, 0) + _COMMAND_TIMEOUT):
                    reply = await client.execute_command(
                        "XREADGROUP", "GROUP", group, consumer, "COUNT", count,
                        *blocking, "STREAMS", *names, *(">" * len(names)), **node,
                    )  # fmt: skip
            except TimeoutError as exc:
                raise StoreError("redis XREADGROUP did not answer in time") from exc
            except ResponseError as exc:
                if attempt == 0 and str(exc).startswith("NOGROUP"):
                    # Like the reference store: a missing group reads from the stream start.
                    for name in names:
                        await self.ensure_group(name, group)
                    continue
                raise StoreError(f"redis XREADGROUP failed: {exc}") from exc
            except _REDIS_ERRORS as exc:
                raise StoreError(f"redis XREADGROUP failed: {exc}") from exc
            return [
                (_text(name), StreamEntry(_text(entry_id), fields[_FIELD], 1))
                for name, entries in reply or ()
                for entry_id, fields in entries
                if fields  # only a re-read of history can yield deleted (empty) entries
            ]
        return []

    async def claim_pending(
        self, stream: str, *, group: str, consumer: str, min_idle: float, count: int
    ) -> list[StreamEntry]:
        self._check_open()
        out: list[StreamEntry] = []
        cursor: Any = "0-0"
        idle_ms = max(0, math.ceil(min_idle * 1000))
        while len(out) < count:
            try:
                with _errors("XAUTOCLAIM"):
                    reply = await self._claim_script(
                        keys=[stream], args=[group, consumer, idle_ms, cursor, count - len(out)]
                    )
            except StoreError as exc:
                if "NOGROUP" in str(exc):
                    return out  # no group, nothing pending
                raise
            cursor, claimed = reply[0], reply[1:]
            out.extend(StreamEntry(_text(i), payload, int(n)) for i, payload, n in claimed)
            if _text(cursor) == "0-0":  # scanned the whole pending list
                break
        return out

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(await self._pipelined("XACK", stream, group, *ids))

    async def _group_info(self, stream: str, group: str) -> tuple[bool, dict[str, Any] | None]:
        """``(stream exists, XINFO GROUPS entry of group or None)``."""
        self._check_open()
        try:
            groups = await self._client.xinfo_groups(stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return False, None
            raise StoreError(f"redis XINFO GROUPS failed: {exc}") from exc
        except _REDIS_ERRORS as exc:
            raise StoreError(f"redis XINFO GROUPS failed: {exc}") from exc
        info: dict[str, Any] | None = next((g for g in groups if _text(g["name"]) == group), None)
        return True, info

    async def backlog(self, stream: str, group: str) -> int:
        exists, info = await self._group_info(stream, group)
        if not exists:
            return 0
        with _errors("backlog"):
            if info is None:
                return int(await self._client.xlen(stream))
            lag = info.get("lag")
            if lag is None:  # unknown after deletions (or on Redis < 7): count it
                lag = await self._count_after_script(
                    keys=[stream], args=[info["last-delivered-id"]]
                )
            return int(info["pending"]) + int(lag)

    async def range(
        self, stream: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        self._check_open()
        start = "-" if after is None else f"({redis_stream_id(after)}"
        with _errors("XRANGE"):
            rows = await _command(self._client, "XRANGE", stream, start, "+", "COUNT", count)
        return [StreamEntry(_text(i), fields[_FIELD]) for i, fields in rows]

    # -- logs ----------------------------------------------------------------------------------
    async def append_log(self, key: str, payload: bytes, *, cap: int) -> str:
        script = self._append_log_script
        return _text(
            await self._pipelined(*self._evalsha(script, [key], [payload, cap]), script=script)
        )

    async def read_log(
        self, key: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        floor = log_cursor(after) or 0
        script = self._read_log_script
        rows = await self._pipelined(*self._evalsha(script, [key], [floor, count]), script=script)
        out: list[StreamEntry] = []
        for row in rows:
            entry_id, _, payload = bytes(row).partition(b":")
            out.append(StreamEntry(entry_id.decode(), payload))
        return out

    async def get_entry(self, stream: str, entry_id: str) -> StreamEntry | None:
        self._check_open()
        if redis_stream_id(entry_id, strict=False) is None:
            return None
        with _errors("XRANGE"):
            rows = await _command(self._client, "XRANGE", stream, entry_id, entry_id, "COUNT", 1)
        return StreamEntry(_text(rows[0][0]), rows[0][1][_FIELD]) if rows else None

    async def trim_acknowledged(self, stream: str, group: str) -> int:
        # Everything below the bound was delivered and acknowledged when it was read, and an
        # acknowledgement is final, so reading and trimming need not be one atomic step.
        _, info = await self._group_info(stream, group)
        if info is None:
            return 0
        with _errors("XTRIM"):
            summary = await self._client.xpending(stream, group)
            if int(summary["pending"]) > 0:
                bound = _text(summary["min"])
            else:
                ms, _, seq = _text(info["last-delivered-id"]).partition("-")
                bound = f"{ms}-{int(seq or 0) + 1}"
            return int(await _command(self._client, "XTRIM", stream, "MINID", bound))

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        wanted = [i for i in ids if redis_stream_id(i, strict=False) is not None]
        if not wanted:
            return 0
        return int(await self._pipelined("XDEL", stream, *wanted))

    # -- state and records ---------------------------------------------------------------------
    async def get_state(self, key: str) -> Versioned | None:
        found = await self._pipelined("GET", key)
        if found is None:
            return None
        version, _, value = bytes(found).partition(b":")
        return Versioned(value, int(version))

    async def commit(self, commit: Commit) -> int | None:
        keys: list[str] = []
        head: list[Any] = ["0", 0, b"", 0]
        tail: list[Any] = []
        if commit.state is not None:
            state = commit.state
            keys.append(state.key)
            ttl = 0 if state.ttl is None else _ms(state.ttl)
            head = ["1", state.expected_version, state.value, ttl]
        for stream, payload in commit.appends:
            keys.append(stream)
            tail.append(payload)
        for key, value, record_ttl in commit.records:
            keys.append(key)
            tail += (value, 0 if record_ttl is None else _ms(record_ttl))
        for stream, group, entry_id in commit.acks:
            keys.append(stream)
            tail += (group, entry_id)
        keys += commit.deletes
        for log in commit.logs:
            keys.append(log.key)
            tail += (log.payload, log.cap)
        counts = [
            len(commit.appends),
            len(commit.records),
            len(commit.acks),
            len(commit.deletes),
            len(commit.logs),
        ]
        args = [*head, *counts, *tail]
        version = int(
            await self._pipelined(
                *self._evalsha(self._commit_script, keys, args), script=self._commit_script
            )
        )
        return None if version < 0 else version

    async def put_record(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        expiry = () if ttl is None else ("PX", _ms(ttl))
        await self._pipelined("SET", key, value, *expiry)

    async def get_record(self, key: str) -> bytes | None:
        value = await self._pipelined("GET", key)
        return None if value is None else bytes(value)

    async def delete(self, keys: Sequence[str]) -> int:
        self._check_open()
        if not keys:
            return 0
        # One DEL per key: a multi-key DEL would span cluster slots.
        with _errors("DEL"):
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.delete(key)
                results = await pipe.execute()
        return sum(int(r) for r in results)

    async def scan(self, prefix: str, *, limit: int = 1000) -> list[str]:
        self._check_open()
        found: set[str] = set()
        cursor: Any = 0
        pattern = _glob_escape(prefix) + "*"
        with _errors("SCAN"):
            if isinstance(self._client, RedisCluster):
                return sorted(await scan_cluster(self._client, prefix, pattern, limit))[:limit]
            while True:
                cursor, keys = await _command(
                    self._client, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000
                )
                found.update(_text(k) for k in keys)
                if int(cursor) == 0 or len(found) >= limit:
                    break
        return sorted(found)[:limit]

    # -- counters, buckets, leases -------------------------------------------------------------
    def _incr_command(self, key: str, amount: int, ttl: float | None) -> tuple[Any, ...]:
        if ttl is None:
            return ("INCRBY", key, amount)
        return self._evalsha(self._incr_ttl_script, [key], [amount, _ms(ttl)])

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        # In the shared pipeline (one script call when there is a TTL), not a MULTI round trip
        # of its own: usage and quota counters are counted on every turn.
        script = None if ttl is None else self._incr_ttl_script
        return int(await self._pipelined(*self._incr_command(key, amount, ttl), script=script))

    async def incr_many(self, items: Sequence[tuple[str, int, float | None]]) -> list[int]:
        self._check_open()
        if not items:
            return []
        # One command per counter (their keys may lie in different cluster slots), all in the
        # same pipeline, with one future for the lot.
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        results: list[int] = [0] * len(items)
        remaining = [len(items)]

        def done(index: int, result: Any) -> None:
            if isinstance(result, BaseException):
                _resolve(fut, result)
                return
            results[index] = int(result)
            remaining[0] -= 1
            if remaining[0] == 0:
                _resolve(fut, results)

        for index, (key, amount, ttl) in enumerate(items):
            script = None if ttl is None else self._incr_ttl_script
            self._commands.append(
                _Command(self._incr_command(key, amount, ttl), partial(done, index), script)
            )
        self._kick()
        return await fut

    async def take_tokens(
        self, key: str, *, rate: float, burst: float, cost: float = 1.0
    ) -> TokenBucketResult:
        self._check_open()
        with _errors("token bucket"):
            allowed, left = await self._tokens_script(keys=[key], args=[rate, burst, cost])
        tokens = float(left)
        if allowed:
            return TokenBucketResult(True, tokens, 0.0)
        wait = (cost - tokens) / rate if rate > 0 else math.inf
        return TokenBucketResult(False, tokens, wait)

    async def acquire_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        self._check_open()
        with _errors("lease"):
            return bool(await self._acquire_script(keys=[key], args=[owner, _ms(ttl)]))

    async def release_lease(self, key: str, owner: str) -> None:
        self._check_open()
        with _errors("lease release"):
            await self._release_script(keys=[key], args=[owner])

    async def heartbeat(self, key: str, member: str, *, ttl: float) -> list[str]:
        self._check_open()
        # A zero TTL is legal here (the member is gone at once), so no _ms() floor of 1.
        ttl_ms = max(0, math.ceil(ttl * 1000))
        with _errors("heartbeat"):
            members = await self._heartbeat_script(keys=[key], args=[member, ttl_ms])
        return sorted(_text(m) for m in members)

    async def members(self, key: str) -> list[Holding]:
        self._check_open()
        with _errors("members"):
            now_ms, flat = await self._members_script(keys=[key], args=[])
        now = int(now_ms)
        pairs = zip(flat[::2], flat[1::2], strict=True)
        alive = [Holding(_text(m), (float(score) - now) / 1000) for m, score in pairs]
        return sorted(alive, key=lambda h: h.owner)

    async def lease_holders(self, keys: Sequence[str]) -> dict[str, Holding | None]:
        self._check_open()
        if not keys:
            return {}
        # One script call per lease (lease keys carry no shared hash tag, so one script over
        # all of them could span cluster slots), all in the same pipeline: one round trip.
        fut: asyncio.Future[dict[str, Holding | None]] = asyncio.get_running_loop().create_future()
        found: dict[str, Holding | None] = {}

        def done(key: str, result: Any) -> None:
            if isinstance(result, BaseException):
                _resolve(fut, result)
                return
            if result is None:
                found[key] = None
            else:
                owner, pttl = result
                # A lease always has a TTL; -1 (none) would mean someone set it by hand.
                left = math.inf if int(pttl) < 0 else int(pttl) / 1000
                found[key] = Holding(_text(owner), left)
            if len(found) == len(wanted):
                _resolve(fut, {k: found[k] for k in keys})

        wanted = set(keys)
        for key in wanted:
            command = self._evalsha(self._lease_holder_script, [key], [])
            self._commands.append(_Command(command, partial(done, key), self._lease_holder_script))
        self._kick()
        return await fut
