"""Partition ownership and per-conversation ordering, shared by the worker and dispatcher.

Conversations are hashed onto partitions (:class:`~gateway.store.Keyspace`). Each role
(``worker``, ``dispatcher``) spreads the partitions over its live processes with leases:
a process holds about ``partitions / live processes`` of them, renews its leases while it
lives, and drains a partition before it lets it go (what it holds of it handled, no read of
it in flight). Only the lease holder reads a partition's stream, so one conversation's
entries are never handled by two processes at once, and within the process one task at a
time handles each conversation, in stream order. Different conversations run concurrently
up to ``max_in_flight`` entries.

A process that dies stops renewing; once its leases expire another process takes the
partitions and first claims every entry the dead one left pending (delivered, never
acknowledged), so nothing is lost. It reads the partition's new entries only after those
are queued: a conversation's later messages are never handled before its earlier ones.

A process reads, claims and starts entries of a partition only while its lease is surely
still its own: within ``lease_seconds`` (less a tenth for the network) of sending the last
renewal that succeeded — the fence. A process cut off from Redis longer than its lease
stops at the fence on its own clock, so when its link heals it does not claim the entries
the new owner is handling nor read the new owner's fresh ones before its next renewal. That
renewal extends the lease only if it was held without a gap (:meth:`Store.renew_lease`);
otherwise the lease is lost: it starts nothing more of that partition, and what it still
has queued stays pending for whoever owns the partition next (itself, after a take-over, if
nobody took it), which claims it in order. An entry already in a handler finishes; the
worker's versioned commit and the dispatcher's delivery records keep it from being answered
twice. Renewals run in their own task, never queued behind a take-over's claims, so a busy
process is not fenced out by its own rebalancing; at the fence, entries wait for the next
renewal instead of being dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic_core import from_json

from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.models import conversation_key_of
from gateway.observability import get_logger
from gateway.store import Keyspace, Store, StreamEntry

__all__ = ["RELEASE_SECONDS", "PartitionConsumer", "conversation_of"]

log = get_logger(__name__)

Handler = Callable[[int, StreamEntry], Awaitable[None]]

_MAX_STORE_RETRY_DELAY = 2.0
_NETWORK_SHARE = 0.1  # of the lease, kept back from the fence for a renewal's trip to Redis
_MIN_BLOCK = 0.05  # a blocking read shorter than this waits for the next renewal instead
RELEASE_SECONDS = 2.0
"""How long a stopping consumer waits for its lease releases (all sent at once)."""


def conversation_of(entry: StreamEntry) -> str:
    """The ordering key of an inbox/outbox entry: its conversation's key.

    Messages carry ``conversation`` as an object, a platform event's envelope as the key
    itself (gateway/envelope.py); both give the same string, so a conversation whose inbox
    holds both kinds is still one queue, in stream order.
    """
    try:
        # pydantic-core's parser: about four times faster than json.loads, per entry read.
        conv = from_json(entry.payload)["conversation"]
        if isinstance(conv, str):
            return conv
        return conversation_key_of(
            conv["tenant"], conv["channel"], conv["conversation_id"], conv.get("thread")
        )
    except (ValueError, KeyError, TypeError):
        return f"?{entry.id}"  # unparsable: its own queue; the handler dead-letters it


@dataclass(slots=True)
class _Owned:
    partition: int
    stream: str
    # Monotonic time up to which the lease is surely ours: the last successful renewal's
    # (or the acquire's) sending time plus the lease, less the network share. The fence.
    fresh_until: float
    draining: bool = False
    releasing: bool = False  # its release is on the way: not renewed any more
    # Set once the previous owner's pending entries are queued; until then the partition is
    # not read (see _take_over).
    taken_over: bool = False
    # A read of it failed: what that read may have delivered is pending on us, unseen.
    unseen: bool = False
    in_flight: set[str] = field(default_factory=set)

    def fresh(self, for_seconds: float = 0.0) -> bool:
        return time.monotonic() + for_seconds < self.fresh_until


class PartitionConsumer:
    def __init__(
        self,
        *,
        store: Store,
        keyspace: Keyspace,
        role: str,
        group: str,
        stream_for: Callable[[int], str],
        handler: Handler,
        consumer_id: str,
        metrics: Metrics,
        lease_seconds: float = 10.0,
        max_in_flight: int = 512,
        read_count: int = 256,
        block_seconds: float = 0.5,
        stale_pending_seconds: float = 120.0,
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.role = role
        self.group = group
        self.stream_for = stream_for
        self.handler = handler
        self.consumer_id = consumer_id
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.max_in_flight = max_in_flight
        self.read_count = read_count
        self.block_seconds = block_seconds
        self.stale_pending_seconds = stale_pending_seconds
        self._owned: dict[int, _Owned] = {}
        self._queues: dict[str, deque[tuple[_Owned, StreamEntry]]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self._in_flight = 0
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._first_balance = asyncio.Event()
        self._balancing: asyncio.Task[None] | None = None
        self._rounds = 0
        self._members: list[str] = []
        self._renewed = asyncio.Event()  # set (and replaced) after every renewal round
        self._reading: frozenset[str] = frozenset()  # the streams of the read in flight

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    @property
    def owned_partitions(self) -> list[int]:
        return sorted(self._owned)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._lease_loop(), name=f"{self.role}-leases"),
            asyncio.create_task(self._read_loop(), name=f"{self.role}-reader"),
        ]
        # Wait for the first balancing round so a single process starts with its partitions.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_balance.wait(), timeout=self.lease_seconds)

    async def stop(self, *, grace: float) -> None:
        """Stop reading, let in-flight work finish for ``grace`` s, hand back the rest."""
        self._stopping = True
        tasks = [*self._tasks, *([self._balancing] if self._balancing else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._renewed.set()  # entries waiting at the fence give up now (see _handle)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        drainers = list(self._drainers.values())
        for task in drainers:
            task.cancel()  # unfinished entries stay pending; the next owner claims them
        await asyncio.gather(*drainers, return_exceptions=True)
        releases = [
            self.store.release_lease(self.keyspace.lease(self.role, p), self.consumer_id)
            for p in self._owned
        ]
        self._owned.clear()
        # A courtesy: the leases expire by themselves. A store that does not answer must
        # not hold the shutdown for a command timeout per partition.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RELEASE_SECONDS):
                await asyncio.gather(*releases, return_exceptions=True)

    # -- leases --------------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        """Renew every third of the lease; rebalance after each renewal, in its own task.

        A rebalancing round (take-overs claim up to hundreds of entries, behind whatever else
        the store is doing) may outlast a renewal interval: the next renewal does not wait
        for it, and the next round starts only once it is over.
        """
        interval = self.lease_seconds / 3
        while not self._stopping:
            try:
                await self._renew()
            except StoreError as exc:
                log.warning("partitions.renewal_failed", role=self.role, error=str(exc))
            finally:
                woken, self._renewed = self._renewed, asyncio.Event()
                woken.set()
            if self._balancing is not None and self._balancing.done():
                self._balancing.result()  # a defect in a round stops the consumer, visibly
                self._balancing = None
            if self._balancing is None:
                self._balancing = asyncio.create_task(
                    self._balance_round(), name=f"{self.role}-balance"
                )
            await asyncio.sleep(interval)

    async def _renew(self) -> None:
        """Keep our membership and every lease we hold; forget the leases that lapsed."""
        self._members = await self.store.heartbeat(
            self.keyspace.members(self.role), self.consumer_id, ttl=self.lease_seconds
        )
        held = [o for o in self._owned.values() if not o.releasing]
        sent = time.monotonic()
        renewals = await asyncio.gather(
            *(
                self.store.renew_lease(
                    self.keyspace.lease(self.role, o.partition),
                    self.consumer_id,
                    ttl=self.lease_seconds,
                )
                for o in held
            ),
            return_exceptions=True,
        )
        failed: StoreError | None = None
        for owned, renewed in zip(held, renewals, strict=True):
            if isinstance(renewed, StoreError):
                failed = renewed  # the fence keeps what it holds idle until a renewal succeeds
            elif isinstance(renewed, BaseException):
                raise renewed
            elif renewed:
                owned.fresh_until = max(owned.fresh_until, sent + self._fresh_for)
            elif self._holds(owned):
                # Lapsed, or taken by another process. Its queued entries are dropped
                # unhandled as their conversations reach them (see _handle): the next owner
                # claims them, and answering them here too would race it and answer a
                # conversation out of order.
                del self._owned[owned.partition]
                log.warning(
                    "partitions.lease_lost",
                    role=self.role,
                    partition=owned.partition,
                    queued=len(owned.in_flight),
                )
        if failed is not None:
            raise failed

    @property
    def _fresh_for(self) -> float:
        return self.lease_seconds * (1 - _NETWORK_SHARE)

    async def _balance_round(self) -> None:
        try:
            await self._balance()
            if self._rounds % 10 == 0:
                await self._reclaim_stale()
                await self._report_depth()
        except StoreError as exc:
            log.warning("partitions.lease_round_failed", role=self.role, error=str(exc))
        finally:
            self._rounds += 1
            self._first_balance.set()

    async def _balance(self) -> None:
        """Release what was drained, hold about ``partitions / members``, adopt what is free."""
        members = self._members
        total = self.keyspace.partitions
        target = math.ceil(total / max(1, len(members)))
        for owned in list(self._owned.values()):
            if not self._holds(owned):
                continue
            if owned.draining and not owned.in_flight and owned.stream not in self._reading:
                # Not while a read of its stream is in flight: what that read returns would
                # be pending on us after the release, unseen by the next owner (it claims
                # when it adopts, maybe before) until the stale-pending sweep.
                owned.releasing = True
                await self.store.release_lease(
                    self.keyspace.lease(self.role, owned.partition), self.consumer_id
                )
                if self._holds(owned):
                    del self._owned[owned.partition]
                log.info("partitions.released", role=self.role, partition=owned.partition)
            elif not owned.taken_over and owned.fresh():
                await self._take_over(owned)  # an earlier round's claim failed: finish it
        active = [o for o in self._owned.values() if not o.draining]
        if len(active) > target:
            for owned in sorted(active, key=lambda o: o.partition)[target:]:
                owned.draining = True
        elif len(active) < target:
            # Start at an offset derived from our position so processes spread out.
            offset = members.index(self.consumer_id) if self.consumer_id in members else 0
            start = offset * target
            for i in range(total):
                if len([o for o in self._owned.values() if not o.draining]) >= target:
                    break
                p = (start + i) % total
                if p in self._owned:
                    continue
                sent = time.monotonic()
                if await self.store.acquire_lease(
                    self.keyspace.lease(self.role, p), self.consumer_id, ttl=self.lease_seconds
                ):
                    await self._adopt(p, fresh_until=sent + self._fresh_for)

    async def _adopt(self, partition: int, *, fresh_until: float) -> None:
        stream = self.stream_for(partition)
        await self.store.ensure_group(stream, self.group)
        owned = _Owned(partition=partition, stream=stream, fresh_until=fresh_until)
        self._owned[partition] = owned
        await self._take_over(owned)

    async def _take_over(self, owned: _Owned) -> None:
        """Queue, in order, whatever the previous owner left unacknowledged; then allow reads.

        The read loop must not read the partition before this returns. A read of new entries
        ("XREADGROUP >") does not wait for a claim in flight, and whichever answer is handled
        first is queued first: under load a conversation's newer entries were queued ahead
        of the older ones the dead owner left pending, and answered first.
        """
        while True:
            entries = await self.store.claim_pending(
                owned.stream, group=self.group, consumer=self.consumer_id, min_idle=0, count=500
            )
            for entry in entries:
                self._enqueue(owned, entry)
            if len(entries) < 500:
                break
        owned.taken_over = True
        log.info("partitions.adopted", role=self.role, partition=owned.partition)

    async def _reclaim_stale(self) -> None:
        """Entries pending far too long (e.g. a handler that crashed) are handled again."""
        for owned in [o for o in self._owned.values() if o.fresh()]:
            entries = await self.store.claim_pending(
                owned.stream,
                group=self.group,
                consumer=self.consumer_id,
                min_idle=self.stale_pending_seconds,
                count=100,
            )
            for entry in entries:
                if entry.id not in owned.in_flight:
                    self._enqueue(owned, entry)

    async def _report_depth(self) -> None:
        """Report the backlog, and drop the entries already handled so streams stay small."""
        depth = 0
        for owned in list(self._owned.values()):
            await self.store.trim_acknowledged(owned.stream, self.group)
            depth += await self.store.backlog(owned.stream, self.group)
        self.metrics.queue_depth.labels(self.role).set(depth)

    # -- reading and ordering ------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while not self._stopping:
            # Only partitions whose lease outlasts the read: a read still blocking at Redis
            # after the lease ran out could take entries meant for the next owner.
            readable = [
                o
                for o in self._owned.values()
                if o.taken_over and not o.draining and o.fresh(_MIN_BLOCK)
            ]
            if not readable:
                if self._owned:
                    await self._next_renewal()  # at the fence, or adopting
                else:
                    await asyncio.sleep(0.05)
                continue
            await self._capacity.wait()
            unseen = [o for o in readable if o.unseen]
            if unseen:
                try:
                    await self._claim_unseen(unseen)
                except StoreError as exc:
                    log.warning("partitions.recover_failed", role=self.role, error=str(exc))
                    await asyncio.sleep(0.5)
                    continue
            by_stream = {o.stream: o for o in readable}
            lease_left = min(o.fresh_until for o in readable) - time.monotonic()
            self._reading = frozenset(by_stream)
            try:
                batch = await self.store.read_group(
                    list(by_stream),
                    group=self.group,
                    consumer=self.consumer_id,
                    # count applies per stream, so share the free capacity among them
                    count=max(
                        1,
                        min(self.read_count, self.max_in_flight - self._in_flight)
                        // len(by_stream),
                    ),
                    block=max(_MIN_BLOCK, min(self.block_seconds, lease_left)),
                )
            except StoreError as exc:
                log.warning("partitions.read_failed", role=self.role, error=str(exc))
                # The read may have reached the store and only its answer been lost: those
                # entries are pending on us, unseen. Claim them before reading new ones.
                for read in readable:
                    self._mark_unseen(read.partition)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._reading = frozenset()
            for stream, entry in batch:
                into = by_stream.get(stream)
                if into is not None:
                    self._enqueue(into, entry)

    def _mark_unseen(self, partition: int) -> None:
        """Claim what is pending on us in ``partition`` before its next read — under the lease
        we hold now, which may not be the one the lost read or claim was made under."""
        current = self._owned.get(partition)
        if current is not None:
            current.unseen = True

    async def _claim_unseen(self, owned_unseen: list[_Owned]) -> None:
        """Take back, in order, every entry pending on this consumer that it is not handling."""
        # No more can be pending on us than we hold plus one lost read.
        most = self.max_in_flight + self.read_count
        for owned in owned_unseen:
            entries = await self.store.claim_pending(
                owned.stream, group=self.group, consumer=self.consumer_id, min_idle=0, count=most
            )
            for entry in entries:
                self._enqueue(owned, entry)
            owned.unseen = False

    async def _next_renewal(self) -> None:
        """Wait for the next renewal round's outcome (bounded: the loop may be stopping)."""
        renewed = self._renewed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(renewed.wait(), timeout=self.lease_seconds / 3)

    def _enqueue(self, owned: _Owned, entry: StreamEntry) -> None:
        if not self._holds(owned):
            # Read or claimed under a lease lost meanwhile: pending on us, not in hand. Won
            # back already, the partition's take-over may have claimed before the store
            # served this read; claim what is pending on us again, in order, before the
            # next read (else it waits for the stale-pending sweep). Not won back: the
            # next owner's take-over claims it.
            self._mark_unseen(owned.partition)
            return
        if entry.id in owned.in_flight:
            return
        owned.in_flight.add(entry.id)
        self._in_flight += 1
        self._idle.clear()
        if self._in_flight >= self.max_in_flight:
            self._capacity.clear()
        conv = conversation_of(entry)
        queue = self._queues.setdefault(conv, deque())
        queue.append((owned, entry))
        if conv not in self._drainers:
            self._drainers[conv] = asyncio.create_task(self._drain(conv))

    async def _drain(self, conv: str) -> None:
        queue = self._queues[conv]
        try:
            while queue:
                owned, entry = queue[0]
                handled = await self._handle(owned, entry)
                queue.popleft()
                self._finished(owned, entry)
                if not handled:
                    self._leave_pending(queue, owned, first=entry)
        finally:
            if not queue:
                del self._queues[conv]
            del self._drainers[conv]
            if self._in_flight == 0:
                self._idle.set()

    def _holds(self, owned: _Owned) -> bool:
        """Whether the lease ``owned`` was read under is still ours, as far as we know.

        Identity, not the partition number: a lease lost and won back is a new ``_Owned``
        whose take-over claims the same entries again, in order. A partition being given up
        (``draining``) is still ours and finishes what it holds. Past the fence we do not
        know: :meth:`_handle` waits for the next renewal to tell.
        """
        return self._owned.get(owned.partition) is owned

    def _finished(self, owned: _Owned, entry: StreamEntry) -> None:
        owned.in_flight.discard(entry.id)
        self._in_flight -= 1
        if self._in_flight < self.max_in_flight:
            self._capacity.set()

    def _leave_pending(
        self, queue: deque[tuple[_Owned, StreamEntry]], owned: _Owned, *, first: StreamEntry
    ) -> None:
        """``first`` was left unhandled: drop the conversation's later entries of ``owned`` too.

        Handling a later one now would answer the conversation out of order: ``first`` stays
        pending and is answered afterwards by whoever owns the partition next. Unhandled
        entries stay pending in the store; the next owner claims them all, in stream order.
        """
        kept = [item for item in queue if item[0] is not owned]
        for item_owned, entry in queue:
            if item_owned is owned:
                self._finished(owned, entry)
        left = 1 + len(queue) - len(kept)
        queue.clear()
        queue.extend(kept)
        self.metrics.partition_entries_left.labels(self.role).inc(left)
        log.warning(
            "partitions.entries_left_pending",
            role=self.role,
            partition=owned.partition,
            first=first.id,
            entries=left,
            reason="stopping" if self._holds(owned) else "lease_lost",
        )

    async def _handle(self, owned: _Owned, entry: StreamEntry) -> bool:
        """Handle ``entry``; False if it was left pending (lease lost, or stopping)."""
        attempt = 0
        while True:
            if not self._holds(owned):
                # Another process owns the partition now and has claimed (or will claim) this
                # entry. Checked before every attempt, not only after a failure: our renewals
                # may have failed for longer than the lease while the handler's store calls
                # went through, and the new owner may still be at an earlier entry.
                return False
            if not owned.fresh():
                if self._stopping:
                    return False
                await self._next_renewal()  # at the fence: held or lost, the renewal says
                continue
            attempt += 1
            try:
                await self.handler(owned.partition, entry)
                return True
            except StoreError as exc:
                # The store is down or flaky (a Redis restart): try the same entry again
                # until it comes back. Moving on would answer the conversation's next
                # message first, and the skipped one only after the stale-pending sweep.
                log.warning(
                    "partitions.handler_store_error",
                    role=self.role,
                    entry=entry.id,
                    attempt=attempt,
                    error=str(exc),
                )
            if self._stopping:
                return False  # stay pending; the next owner claims it
            await asyncio.sleep(min(0.2 * attempt, _MAX_STORE_RETRY_DELAY))
