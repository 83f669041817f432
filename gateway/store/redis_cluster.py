"""What the Redis store does differently on a Redis Cluster (``store.cluster: true``).

Routing is redis-py's ``RedisCluster``: it learns the slot map from any node, sends each
command to the master owning its key's slot, follows ``MOVED``/``ASK`` and groups a
pipeline's commands per node. This module adds only what the store's own calls need:

- Every atomic call (a Lua script) must keep its keys in one slot. :func:`cross_slot_error`
  refuses one that does not with a :class:`StoreError` for that call alone; redis-py would
  instead fail the whole shared pipeline, every other caller's commands with it.
- One ``XREADGROUP`` cannot name streams of several slots. :class:`SlotReads` reads each
  slot's streams with a command of its own, all at once, and returns as soon as any has
  entries; the others keep waiting and their entries are returned by the next call.
- ``SCAN`` is per node: :func:`scan_cluster` walks every master, or only the one owning
  the prefix's slot when the prefix carries a whole hash tag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from gateway.errors import StoreError
from gateway.store.base import StreamEntry

__all__ = ["SlotReads", "connect_cluster", "cross_slot_error", "scan_cluster", "slot_of"]

_MAX_CONNECTIONS_PER_NODE = 10_000  # redis-server's default maxclients

ReadBatch = Callable[[list[str], float], Coroutine[Any, Any, list[tuple[str, StreamEntry]]]]


def connect_cluster(
    url: str, *, connect_timeout: float, socket_timeout: float | None
) -> RedisCluster:
    """A cluster client that starts from the node in ``url`` and learns the others.

    No command retries, as for a single server (see :mod:`gateway.store.redis`): a command
    resent after a dropped connection may run twice. Redirections are not retries: a node
    answers ``MOVED``/``ASK`` without running the command.

    Connections per node are bounded by Redis's own ``maxclients`` default, not redis-py's
    100: a process keeps one blocking read per partition slot it reads (:class:`SlotReads`),
    and one holding more than 100 partitions on one master would otherwise be refused.
    """
    return RedisCluster.from_url(
        url,
        decode_responses=False,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        max_connections=_MAX_CONNECTIONS_PER_NODE,
    )


def slot_of(key: str | bytes) -> int:
    return key_slot(key.encode() if isinstance(key, str) else key)


def cross_slot_error(args: Sequence[Any]) -> StoreError | None:
    """A StoreError if ``args`` is a script call whose keys lie in more than one slot."""
    if args[0] != "EVALSHA":
        return None  # the store's other commands name one key each
    keys = args[3 : 3 + int(args[2])]
    slots = {slot_of(k) for k in keys}
    if len(slots) <= 1:
        return None
    return StoreError(
        f"redis cluster: one atomic call names keys in {len(slots)} slots; "
        "its keys must share a {hash tag}"
    )


def by_slot(names: Sequence[str]) -> list[list[str]]:
    """``names`` grouped by cluster slot, each group in the given order."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(slot_of(name), []).append(name)
    return list(groups.values())


async def scan_cluster(client: RedisCluster, prefix: str, pattern: str, limit: int) -> set[str]:
    """Keys matching ``pattern`` on every master (or on the one owning ``prefix``'s tag)."""
    target: Any = None
    start = prefix.find("{")
    if start >= 0 and prefix.find("}", start + 1) > start + 1:
        # The prefix holds a whole hash tag, the first of every key under it (as Redis reads
        # it: the first "{" and the first "}" after it, not empty): they share its slot.
        target = client.get_node_from_key(prefix)
    found: set[str] = set()
    async for key in client.scan_iter(match=pattern, count=1000, target_nodes=target):
        found.add(key.decode() if isinstance(key, bytes) else str(key))
        if len(found) >= limit:
            break
    return found


def _observe(task: asyncio.Task[Any]) -> None:
    """Mark a read's failure as seen: a dropped read's error is no news to anyone."""
    if not task.cancelled():
        task.exception()


class SlotReads:
    """``XREADGROUP`` over streams of several slots: one command per slot, all at once.

    A read still blocked when another slot answered is kept, not cancelled: cancelling
    closes its connection, and entries the server handed it just before would be left
    pending, unseen, until reclaimed as stale. The next call for the same group, consumer
    and streams waits on that read instead of starting another, and returns its entries.
    Reads of streams the next call no longer names are cancelled (their partitions were
    given up; what they left pending is claimed by the partitions' next owner), and so are
    all of a consumer's reads when one of them fails or its caller is cancelled.
    """

    def __init__(self) -> None:
        self._reads: dict[tuple[str, str, tuple[str, ...]], asyncio.Task[Any]] = {}

    async def read(
        self,
        batches: list[list[str]],
        *,
        group: str,
        consumer: str,
        block: float,
        read_batch: ReadBatch,
    ) -> list[tuple[str, StreamEntry]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block
        wanted = [(group, consumer, tuple(batch)) for batch in batches]
        self._cancel_unwanted(group, consumer, set(wanted))
        while True:
            remaining = deadline - loop.time()
            fresh: list[asyncio.Task[Any]] = []
            for key in wanted:
                if key not in self._reads:
                    task = asyncio.create_task(read_batch(list(key[2]), max(remaining, 0.0)))
                    task.add_done_callback(_observe)
                    self._reads[key] = task
                    fresh.append(task)
            try:
                if remaining > 0:
                    pending = [self._reads[key] for key in wanted]
                    await asyncio.wait(
                        pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                elif fresh:
                    await asyncio.wait(fresh)  # reads without BLOCK: one round trip
            except asyncio.CancelledError:
                # The reader stops (a consumer shutting down): its reads stop with it, as a
                # single XREADGROUP would, rather than take entries nobody will collect.
                self._cancel_unwanted(group, consumer, set())
                raise
            out: list[tuple[str, StreamEntry]] = []
            failure: BaseException | None = None
            for key in wanted:
                task = self._reads[key]
                if not task.done():
                    continue
                del self._reads[key]
                if task.cancelled():
                    failure = StoreError("redis XREADGROUP was cancelled")
                elif (error := task.exception()) is not None:
                    failure = error
                else:
                    out.extend(task.result())
            if failure is not None:
                # Entries the other slots returned are pending on this consumer, unseen,
                # exactly as after a read whose answer was lost: callers reclaim them. The
                # reads still out are cancelled too, so that nothing they were handed comes
                # back through a later call as well as through that reclaim.
                self._cancel_unwanted(group, consumer, set())
                raise failure
            if out or loop.time() >= deadline:
                return out

    def _cancel_unwanted(
        self, group: str, consumer: str, wanted: set[tuple[str, str, tuple[str, ...]]]
    ) -> None:
        for key in [k for k in self._reads if k[:2] == (group, consumer) and k not in wanted]:
            self._reads.pop(key).cancel()

    async def aclose(self) -> None:
        tasks = list(self._reads.values())
        self._reads.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
