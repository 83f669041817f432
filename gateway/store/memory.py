"""In-process store: the executable reference of the ``Store`` semantics.

For unit tests and experiments only: it is neither durable nor shared between processes.
Single-threaded asyncio makes every method atomic without locks (no ``await`` inside a
mutation).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.store.base import (
    Admission,
    Commit,
    Holding,
    StreamEntry,
    TokenBucketResult,
    Versioned,
)
from gateway.store.cursors import decimal_id, log_cursor

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Pending:
    consumer: str
    delivered_at: float
    deliveries: int


@dataclass(slots=True)
class _Group:
    last_delivered: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)


@dataclass(slots=True)
class _Stream:
    seq: int = 0
    entries: dict[int, bytes] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)


class MemoryStore:
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._records: dict[str, tuple[bytes, float | None]] = {}
        self._states: dict[str, tuple[bytes, int, float | None]] = {}
        self._streams: dict[str, _Stream] = {}
        self._counters: dict[str, tuple[int, float | None]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._members: dict[str, dict[str, float]] = {}
        self._appended = asyncio.Event()

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _now() -> float:
        return time.monotonic()

    def _alive(self, expires: float | None) -> bool:
        return expires is None or expires > self._now()

    def _exp(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._now() + ttl

    def _stream(self, name: str) -> _Stream:
        return self._streams.setdefault(name, _Stream())

    def _append(self, stream: str, payload: bytes, maxlen: int | None = None) -> str:
        s = self._stream(stream)
        s.seq += 1
        s.entries[s.seq] = payload
        if maxlen is not None:
            while len(s.entries) > maxlen:
                del s.entries[next(iter(s.entries))]
        self._appended.set()
        return str(s.seq)

    def _claim(self, key: str, ttl: float | None, holder: bytes = b"1") -> bool:
        current = self._records.get(key)
        if current is not None and self._alive(current[1]):
            return False
        self._records[key] = (holder, self._exp(ttl))
        return True

    # -- ingest --------------------------------------------------------------------------------
    async def admit(self, items: Sequence[Admission], *, dedupe_ttl: float) -> list[str | None]:
        return [
            self._append(item.stream, item.payload, item.log_cap)
            if self._claim(item.dedupe_key, dedupe_ttl)
            else None
            for item in items
        ]

    async def claim(self, key: str, *, ttl: float, holder: bytes = b"1") -> bool:
        return self._claim(key, ttl, holder)

    # -- streams -------------------------------------------------------------------------------
    async def append(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        return self._append(stream, payload, maxlen)

    async def ensure_group(self, stream: str, group: str) -> None:
        self._stream(stream).groups.setdefault(group, _Group())

    def _take_new(
        self, streams: Sequence[str], group: str, consumer: str, count: int
    ) -> list[tuple[str, StreamEntry]]:
        out: list[tuple[str, StreamEntry]] = []
        now = self._now()
        for name in dict.fromkeys(streams):
            s = self._stream(name)
            g = s.groups.setdefault(group, _Group())
            for entry_id in sorted(i for i in s.entries if i > g.last_delivered)[:count]:
                g.last_delivered = entry_id
                g.pending[entry_id] = _Pending(consumer, now, 1)
                out.append((name, StreamEntry(str(entry_id), s.entries[entry_id], 1)))
        return out

    async def read_group(
        self,
        streams: Sequence[str],
        *,
        group: str,
        consumer: str,
        count: int,
        block: float,
    ) -> list[tuple[str, StreamEntry]]:
        deadline = self._now() + block
        while True:
            self._appended.clear()
            out = self._take_new(streams, group, consumer, count)
            remaining = deadline - self._now()
            if out or remaining <= 0:
                return out
            try:
                await asyncio.wait_for(self._appended.wait(), remaining)
            except TimeoutError:
                return self._take_new(streams, group, consumer, count)

    async def claim_pending(
        self, stream: str, *, group: str, consumer: str, min_idle: float, count: int
    ) -> list[StreamEntry]:
        s = self._stream(stream)
        g = s.groups.setdefault(group, _Group())
        now = self._now()
        out: list[StreamEntry] = []
        for entry_id in sorted(g.pending):
            if len(out) >= count:
                break
            p = g.pending[entry_id]
            if now - p.delivered_at < min_idle:
                continue
            if entry_id not in s.entries:  # deleted while pending: drop it, as Redis does
                del g.pending[entry_id]
                continue
            g.pending[entry_id] = _Pending(consumer, now, p.deliveries + 1)
            out.append(StreamEntry(str(entry_id), s.entries[entry_id], p.deliveries + 1))
        return out

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        g = self._stream(stream).groups.get(group)
        if g is None:
            return 0
        return sum(g.pending.pop(int(i), None) is not None for i in ids)

    async def backlog(self, stream: str, group: str) -> int:
        s = self._stream(stream)
        g = s.groups.get(group)
        if g is None:
            return len(s.entries)
        return len(g.pending) + sum(1 for i in s.entries if i > g.last_delivered)

    async def range(
        self, stream: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        floor = decimal_id(after) or 0
        s = self._streams.get(stream)
        if s is None:
            return []
        ids = sorted(i for i in s.entries if i > floor)[:count]
        return [StreamEntry(str(i), s.entries[i]) for i in ids]

    async def get_entry(self, stream: str, entry_id: str) -> StreamEntry | None:
        s = self._streams.get(stream)
        wanted = decimal_id(entry_id, strict=False)
        if s is None or wanted is None or wanted not in s.entries:
            return None
        return StreamEntry(entry_id, s.entries[wanted])

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        s = self._streams.get(stream)
        if s is None:
            return 0
        wanted = (decimal_id(i, strict=False) for i in ids)
        return sum(s.entries.pop(i, None) is not None for i in wanted if i is not None)

    async def trim_acknowledged(self, stream: str, group: str) -> int:
        s = self._streams.get(stream)
        g = s.groups.get(group) if s is not None else None
        if s is None or g is None:
            return 0
        bound = min(g.pending, default=g.last_delivered + 1)
        done = [i for i in s.entries if i < bound]
        for i in done:
            del s.entries[i]
        return len(done)

    # -- logs (streams with a cap here) ---------------------------------------------------------
    async def append_log(self, key: str, payload: bytes, *, cap: int) -> str:
        return self._append(key, payload, cap)

    async def read_log(
        self, key: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        floor = log_cursor(after)
        return await self.range(key, after=None if floor is None else str(floor), count=count)

    # -- state and records ---------------------------------------------------------------------
    async def get_state(self, key: str) -> Versioned | None:
        current = self._states.get(key)
        if current is None or not self._alive(current[2]):
            return None
        return Versioned(current[0], current[1])

    async def commit(self, commit: Commit) -> int | None:
        version = 0
        if commit.state is not None:
            current = await self.get_state(commit.state.key)
            have = current.version if current is not None else 0
            if have != commit.state.expected_version:
                return None
            version = have + 1
            self._states[commit.state.key] = (
                commit.state.value,
                version,
                self._exp(commit.state.ttl),
            )
        for stream, payload in commit.appends:
            self._append(stream, payload)
        for log in commit.logs:
            self._append(log.key, log.payload, log.cap)
        for key, value, ttl in commit.records:
            self._records[key] = (value, self._exp(ttl))
        for stream, group, entry_id in commit.acks:
            await self.ack(stream, group, [entry_id])
        self._delete(commit.deletes)
        for key, amount, ttl in commit.counters:
            self._incr(key, amount, ttl)
        return version

    async def put_record(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._records[key] = (value, self._exp(ttl))

    async def get_record(self, key: str) -> bytes | None:
        current = self._records.get(key)
        if current is None or not self._alive(current[1]):
            return None
        return current[0]

    def _delete(self, keys: Sequence[str]) -> int:
        tables: list[dict[str, Any]] = [
            self._records,
            self._states,
            self._streams,
            self._counters,
            self._buckets,
            self._leases,
            self._members,
        ]
        found = 0
        for key in keys:
            for table in tables:
                if table.pop(key, None) is not None:
                    found += 1
        return found

    async def delete(self, keys: Sequence[str]) -> int:
        return self._delete(keys)

    async def scan(self, prefix: str, *, limit: int = 1000) -> list[str]:
        keys: set[str] = {k for k in self._streams if k.startswith(prefix)}
        keys.update(
            k for k, v in self._records.items() if k.startswith(prefix) and self._alive(v[1])
        )
        keys.update(
            k for k, v in self._states.items() if k.startswith(prefix) and self._alive(v[2])
        )
        keys.update(
            k for k, v in self._counters.items() if k.startswith(prefix) and self._alive(v[1])
        )
        return sorted(keys)[:limit]

    # -- counters, buckets, leases -------------------------------------------------------------
    def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        current = self._counters.get(key)
        if current is None or not self._alive(current[1]):
            current = (0, self._exp(ttl))
        value = current[0] + amount
        self._counters[key] = (value, current[1])
        return value

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        return self._incr(key, amount, ttl)

    async def incr_many(self, items: Sequence[tuple[str, int, float | None]]) -> list[int]:
        return [self._incr(key, amount, ttl) for key, amount, ttl in items]

    async def take_tokens(
        self, key: str, *, rate: float, burst: float, cost: float = 1.0
    ) -> TokenBucketResult:
        now = self._now()
        tokens, stamp = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - stamp) * rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return TokenBucketResult(True, tokens - cost, 0.0)
        self._buckets[key] = (tokens, now)
        wait = (cost - tokens) / rate if rate > 0 else float("inf")
        return TokenBucketResult(False, tokens, wait)

    async def acquire_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        current = self._leases.get(key)
        if current is not None and current[0] != owner and current[1] > self._now():
            return False
        self._leases[key] = (owner, self._now() + ttl)
        return True

    async def renew_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        current = self._leases.get(key)
        if current is None or current[0] != owner or current[1] <= self._now():
            return False
        self._leases[key] = (owner, self._now() + ttl)
        return True

    async def release_lease(self, key: str, owner: str) -> None:
        current = self._leases.get(key)
        if current is not None and current[0] == owner:
            del self._leases[key]

    async def heartbeat(self, key: str, member: str, *, ttl: float) -> list[str]:
        now = self._now()
        members = self._members.setdefault(key, {})
        members[member] = now + ttl
        for name in [m for m, exp in members.items() if exp <= now]:
            del members[name]
        return sorted(members)

    async def members(self, key: str) -> list[Holding]:
        now = self._now()
        alive = self._members.get(key, {})
        return [Holding(m, exp - now) for m, exp in sorted(alive.items()) if exp > now]

    async def lease_holders(self, keys: Sequence[str]) -> dict[str, Holding | None]:
        now = self._now()
        found: dict[str, Holding | None] = {}
        for key in keys:
            owner, expires = self._leases.get(key, ("", now))
            found[key] = Holding(owner, expires - now) if expires > now else None
        return found
