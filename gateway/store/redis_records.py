"""The Redis store's state, records, counters, token buckets, leases and heartbeats.

Guarantees: a commit is all-or-nothing and checks the state's version before any write, so
a conflict changes nothing; counters, buckets, leases and heartbeats each change in one
atomic command or script; buckets and heartbeats run on the server's clock, so processes
with skewed clocks share them fairly; a lease is only ever released by its holder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

from redis.asyncio.cluster import RedisCluster

from gateway.store.base import Commit, Holding, TokenBucketResult, Versioned
from gateway.store.redis_cluster import scan_cluster
from gateway.store.redis_pipeline import (
    PipelinedCommand,
    RedisPipeline,
    raw_command,
    resolve,
    store_errors,
    text,
    to_ms,
)

__all__ = ["RedisRecords"]


def _glob_escape(pattern: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern)


class RedisRecords(RedisPipeline):
    """State, records, counters, buckets and leases of :class:`gateway.store.redis.RedisStore`."""

    # -- state and records ---------------------------------------------------------------------
    async def get_state(self, key: str) -> Versioned | None:
        found = await self._pipelined("GET", key)
        if found is None:
            return None
        version, _, value = bytes(found).partition(b":")
        return Versioned(value, int(version))

    async def commit(self, commit: Commit) -> int | None:
        if commit.counters and self._slot_reads is not None:
            # A cluster's script reaches one slot, and the counters live in others.
            version = await self.commit(dataclasses.replace(commit, counters=()))
            if version is not None:
                await self.incr_many(commit.counters)
            return version
        keys: list[str] = []
        head: list[Any] = ["0", 0, b"", 0]
        tail: list[Any] = []
        if commit.state is not None:
            state = commit.state
            keys.append(state.key)
            ttl = 0 if state.ttl is None else to_ms(state.ttl)
            head = ["1", state.expected_version, state.value, ttl]
        for stream, payload in commit.appends:
            keys.append(stream)
            tail.append(payload)
        for key, value, record_ttl in commit.records:
            keys.append(key)
            tail += (value, 0 if record_ttl is None else to_ms(record_ttl))
        for stream, group, entry_id in commit.acks:
            keys.append(stream)
            tail += (group, entry_id)
        keys += commit.deletes
        for log in commit.logs:
            keys.append(log.key)
            tail += (log.payload, log.cap)
        for key, amount, counter_ttl in commit.counters:
            keys.append(key)
            tail += (amount, 0 if counter_ttl is None else to_ms(counter_ttl))
        counts = [
            len(commit.appends),
            len(commit.records),
            len(commit.acks),
            len(commit.deletes),
            len(commit.logs),
            len(commit.counters),
        ]
        args = [*head, *counts, *tail]
        version = int(
            await self._pipelined(
                *self._evalsha(self._commit_script, keys, args),
                script=self._commit_script,
                replicated=True,
            )
        )
        return None if version < 0 else version

    async def put_record(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        expiry = () if ttl is None else ("PX", to_ms(ttl))
        await self._pipelined("SET", key, value, *expiry)

    async def get_record(self, key: str) -> bytes | None:
        value = await self._pipelined("GET", key)
        return None if value is None else bytes(value)

    async def delete(self, keys: Sequence[str]) -> int:
        self._check_open()
        if not keys:
            return 0
        # One DEL per key: a multi-key DEL would span cluster slots.
        with store_errors("DEL"):
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
        with store_errors("SCAN"):
            if isinstance(self._client, RedisCluster):
                return sorted(await scan_cluster(self._client, prefix, pattern, limit))[:limit]
            while True:
                cursor, keys = await raw_command(
                    self._client, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000
                )
                found.update(text(k) for k in keys)
                if int(cursor) == 0 or len(found) >= limit:
                    break
        return sorted(found)[:limit]

    # -- counters, buckets, leases -------------------------------------------------------------
    def _incr_command(self, key: str, amount: int, ttl: float | None) -> tuple[Any, ...]:
        if ttl is None:
            return ("INCRBY", key, amount)
        return self._evalsha(self._incr_ttl_script, [key], [amount, to_ms(ttl)])

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
                resolve(fut, result)
                return
            results[index] = int(result)
            remaining[0] -= 1
            if remaining[0] == 0:
                resolve(fut, results)

        for index, (key, amount, ttl) in enumerate(items):
            script = None if ttl is None else self._incr_ttl_script
            self._commands.append(
                PipelinedCommand(self._incr_command(key, amount, ttl), partial(done, index), script)
            )
        self._kick()
        return await fut

    async def take_tokens(
        self, key: str, *, rate: float, burst: float, cost: float = 1.0
    ) -> TokenBucketResult:
        self._check_open()
        with store_errors("token bucket"):
            allowed, left = await self._tokens_script(keys=[key], args=[rate, burst, cost])
        tokens = float(left)
        if allowed:
            return TokenBucketResult(True, tokens, 0.0)
        wait = (cost - tokens) / rate if rate > 0 else math.inf
        return TokenBucketResult(False, tokens, wait)

    async def acquire_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        self._check_open()
        with store_errors("lease"):
            return bool(await self._acquire_script(keys=[key], args=[owner, to_ms(ttl)]))

    async def renew_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        self._check_open()
        with store_errors("lease renewal"):
            return bool(await self._renew_script(keys=[key], args=[owner, to_ms(ttl)]))

    async def release_lease(self, key: str, owner: str) -> None:
        self._check_open()
        with store_errors("lease release"):
            await self._release_script(keys=[key], args=[owner])

    async def heartbeat(self, key: str, member: str, *, ttl: float) -> list[str]:
        self._check_open()
        # A zero TTL is legal here (the member is gone at once), so no to_ms() floor of 1.
        ttl_ms = max(0, math.ceil(ttl * 1000))
        with store_errors("heartbeat"):
            members = await self._heartbeat_script(keys=[key], args=[member, ttl_ms])
        return sorted(text(m) for m in members)

    async def members(self, key: str) -> list[Holding]:
        self._check_open()
        with store_errors("members"):
            now_ms, flat = await self._members_script(keys=[key], args=[])
        now = int(now_ms)
        pairs = zip(flat[::2], flat[1::2], strict=True)
        alive = [Holding(text(m), (float(score) - now) / 1000) for m, score in pairs]
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
                resolve(fut, result)
                return
            if result is None:
                found[key] = None
            else:
                owner, pttl = result
                # A lease always has a TTL; -1 (none) would mean someone set it by hand.
                left = math.inf if int(pttl) < 0 else int(pttl) / 1000
                found[key] = Holding(text(owner), left)
            if len(found) == len(wanted):
                resolve(fut, {k: found[k] for k in keys})

        wanted = set(keys)
        for key in wanted:
            command = self._evalsha(self._lease_holder_script, [key], [])
            self._commands.append(
                PipelinedCommand(command, partial(done, key), self._lease_holder_script)
            )
        self._kick()
        return await fut
